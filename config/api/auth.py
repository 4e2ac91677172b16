"""JWT authentication for the entry points DRF does not serve (SSE views, WebSocket)."""

from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError


def user_from_token(raw_token: str | None):
    """The active user an access token names, or None. Sync: call it through
    ``database_sync_to_async`` from async code."""
    if not raw_token:
        return None
    auth = JWTAuthentication()
    try:
        validated = auth.get_validated_token(raw_token.encode() if isinstance(raw_token, str) else raw_token)
        user = auth.get_user(validated)
    except (InvalidToken, TokenError, AuthenticationFailed):
        return None
    if not user.is_active or not user.tenant_id:
        return None
    # Touch the tenant here, in sync code, so async callers never lazy-load it.
    user.tenant  # noqa: B018
    return user


def bearer_token(request) -> str | None:
    """``Authorization: Bearer <token>``, else ``?token=`` (browsers' EventSource cannot
    send headers)."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer ") :].strip()
    return request.GET.get("token") or None
