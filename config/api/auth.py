"""JWT authentication for the entry points DRF does not serve (SSE views, WebSocket)."""

from dataclasses import dataclass

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from config.core.context import tenant_id_var, user_id_var


def _remember(user) -> None:
    """Puts the caller in the context that logs, tasks and audits read."""
    user_id_var.set(user.pk)
    tenant_id_var.set(user.tenant_id)


def _tenant_active(user) -> bool:
    """Whether ``user``'s tenant may use the API. Loads ``user.tenant`` (one query unless
    already loaded); the per-tenant rate limit reads it next anyway."""
    return bool(user.tenant_id) and user.tenant.is_active


class JWTAuthentication(authentication.JWTAuthentication):
    """simplejwt's, refusing users of a deactivated tenant, plus the caller in the request
    context."""

    def get_user(self, validated_token):
        user = super().get_user(validated_token)
        if not _tenant_active(user):
            raise AuthenticationFailed("Tenant is inactive", code="tenant_inactive")
        return user

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            _remember(result[0])
        return result


@dataclass(frozen=True)
class Access:
    """Who a valid access token names, and until when (``exp``, seconds since the epoch)."""

    user: object
    expires_at: float


def access_from_token(raw_token: str | None) -> Access | None:
    """The active user of an active tenant an access token names, with the token's expiry;
    None when the token is missing, invalid or expired. Sync: call it through
    ``database_sync_to_async`` from async code."""
    if not raw_token:
        return None
    auth = JWTAuthentication()
    try:
        validated = auth.get_validated_token(raw_token.encode() if isinstance(raw_token, str) else raw_token)
        # Refuses inactive users and users of a deactivated tenant; loads the tenant here,
        # in sync code, so async callers never lazy-load it.
        user = auth.get_user(validated)
    except (InvalidToken, TokenError, AuthenticationFailed):
        return None
    if not user.is_active:
        return None
    _remember(user)
    return Access(user=user, expires_at=float(validated["exp"]))


def user_still_active(user_id: int) -> bool:
    """Whether the user and their tenant are both still active: one query. Long-lived
    connections (WebSocket, SSE) authenticated once call it again while they stay open."""
    from accounts.models import User

    return User.objects.filter(pk=user_id, is_active=True, tenant__is_active=True).exists()


def bearer_token(request) -> str | None:
    """``Authorization: Bearer <token>``, else ``?token=`` (browsers' EventSource cannot
    send headers)."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer ") :].strip()
    return request.GET.get("token") or None


class JWTScheme(SimpleJWTScheme):
    """Documents our JWTAuthentication in the OpenAPI schema as simplejwt's bearer scheme."""

    target_class = "config.api.auth.JWTAuthentication"
