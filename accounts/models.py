import uuid

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken


class Tenant(models.Model):
    class Tier(models.TextChoices):
        FREE = "free", "Free"
        STANDARD = "standard", "Standard"
        ENTERPRISE = "enterprise", "Enterprise"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    tier = models.CharField(max_length=20, choices=Tier.choices, default=Tier.FREE)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class TenantQuerySet(models.QuerySet):
    def for_tenant(self, tenant):
        """The only way API code reads tenant-owned rows: scoped to one tenant."""
        tenant_id = getattr(tenant, "pk", tenant)
        if tenant_id is None:
            return self.none()
        return self.filter(tenant_id=tenant_id)


class TenantOwnedModel(models.Model):
    """Base for every row that belongs to a tenant. Selectors start from ``for_tenant``."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")

    objects = TenantQuerySet.as_manager()

    class Meta:
        abstract = True


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, email, password=None, **extra):
        if not email:
            raise ValueError("email is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email, password=None, **extra):
        # Platform staff belong to an operators tenant of their own.
        if "tenant" not in extra and "tenant_id" not in extra:
            extra["tenant"], _ = Tenant.objects.get_or_create(
                slug="operators", defaults={"name": "Operators", "tier": Tenant.Tier.ENTERPRISE}
            )
        extra.setdefault("role", User.Role.OWNER)
        # Optional for staff (`createsuperuser --noinput` needs only email and password):
        # the email's local part until someone edits it in the admin.
        if not extra.get("display_name") and email:
            extra["display_name"] = str(email).split("@", 1)[0][:150]
        extra.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    # Stored lower-cased, so uniqueness is case-insensitive.
    email = models.EmailField(unique=True)
    display_name = models.CharField(max_length=150, blank=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="users")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MEMBER)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    # createsuperuser asks for nothing else; create_superuser derives display_name.
    REQUIRED_FIELDS = []

    class Meta:
        ordering = ["email"]
        indexes = [models.Index(fields=["tenant", "email"])]

    def __str__(self) -> str:
        return self.email

    @property
    def is_tenant_admin(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


class RefreshTokenFamily(models.Model):
    """The chain of refresh tokens one login (or registration) starts: each rotation's new
    token joins its family, and every token carries the family's id in its ``family``
    claim. Presenting a token of the family that was already rotated is reuse (OAuth 2.0
    Security BCP, refresh token rotation): the whole family is revoked. Logout revokes it
    too. The row is also the family's lock: rotation, reuse and logout take it first."""

    class RevokedReason(models.TextChoices):
        REUSED = "reused", "A rotated refresh token was presented again"
        LOGOUT = "logout", "Logged out"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="refresh_token_families")
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=20, choices=RevokedReason.choices, blank=True)

    def __str__(self) -> str:
        return f"{self.user_id}:{self.pk}"


class RefreshTokenFamilyMember(models.Model):
    """Which family an outstanding refresh token belongs to. simplejwt's
    ``flushexpiredtokens`` deletes expired outstanding tokens and, by cascade, these."""

    token = models.OneToOneField(
        OutstandingToken, on_delete=models.CASCADE, primary_key=True, related_name="family_membership"
    )
    family = models.ForeignKey(RefreshTokenFamily, on_delete=models.CASCADE, related_name="members")

    def __str__(self) -> str:
        return f"{self.family_id}:{self.token_id}"
