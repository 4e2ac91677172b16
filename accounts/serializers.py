from rest_framework import serializers

from config.api.fields import StrictCharField

from .models import Tenant, User


class TenantSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tenant
        fields = ["id", "name", "slug", "tier", "created_at"]
        read_only_fields = fields


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "display_name", "role", "tenant_id", "is_active", "date_joined"]
        read_only_fields = fields


class RegisterSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = StrictCharField(write_only=True, max_length=128, trim_whitespace=False)
    display_name = StrictCharField(max_length=150)
    tenant_name = StrictCharField(max_length=200)


class LoginSerializer(serializers.Serializer):
    email = serializers.CharField(max_length=254)
    password = StrictCharField(write_only=True, max_length=128, trim_whitespace=False)


class RefreshSerializer(serializers.Serializer):
    refresh = StrictCharField()


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class RegisteredSerializer(TokenPairSerializer):
    user = UserSerializer()
    tenant = TenantSerializer()


class UserCreateSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    password = StrictCharField(write_only=True, max_length=128, trim_whitespace=False)
    display_name = StrictCharField(max_length=150)
    role = serializers.ChoiceField(choices=User.Role.choices, default=User.Role.MEMBER)


class MeSerializer(serializers.Serializer):
    """The schema of ``GET /auth/me``; the view answers with ``me_body`` (same JSON)."""

    user = UserSerializer()
    tenant = TenantSerializer()


_DATETIME = serializers.DateTimeField(read_only=True)


def me_body(user) -> dict:
    """``MeSerializer({"user": user, "tenant": user.tenant}).data`` as a plain dict: the
    nested ModelSerializers rebuilt their fields on every request, ~0.75 ms of the
    endpoint's CPU (docs/overhead.md); a test compares the two."""
    tenant = user.tenant
    when = _DATETIME.to_representation
    return {
        "user": {
            "id": user.pk,
            "email": user.email,
            "display_name": user.display_name,
            "role": user.role,
            "tenant_id": user.tenant_id,
            "is_active": user.is_active,
            "date_joined": when(user.date_joined),
        },
        "tenant": {
            "id": tenant.pk,
            "name": tenant.name,
            "slug": tenant.slug,
            "tier": tenant.tier,
            "created_at": when(tenant.created_at),
        },
    }
