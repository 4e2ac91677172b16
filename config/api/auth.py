"""JWT authentication for the entry points DRF does not serve (SSE views, WebSocket)."""

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.utils import get_md5_hash_password

from config.core.context import tenant_id_var, user_id_var
from config.rows import JoinedRead

from .callers import callers


class ValidatedTokens:
    """Raw access token -> its validated token, kept until the token's own ``exp``, for the
    async fast paths (``aauthenticate``). A token's validity depends only on its bytes, the
    signing key and the clock (access tokens are never checked against the blacklist), so
    the signature and claims checked once hold for the same bytes until ``exp``; what the
    token names (the user, their tenant, a password change) is still checked on every
    request against the caller (``check_user``). Saves PyJWT's decode and HMAC on every
    request of a client that sends the same token (about 0.2-0.3 ms of CPU). Bounded: the
    oldest entries go first. Thread-safe."""

    def __init__(self, *, clock=None, max_entries: int = 10_000):
        # Looked up on each call, so a test's frozen clock (freezegun) is the one used.
        self.clock = clock or (lambda: time.time())
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, raw_token: bytes):
        with self._lock:
            entry = self._entries.get(raw_token)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[raw_token]
                return None
            return entry[1]

    def put(self, raw_token: bytes, validated) -> None:
        expires = validated.get("exp")
        if not isinstance(expires, int | float):
            return
        with self._lock:
            self._entries[raw_token] = (float(expires), validated)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


validated_tokens = ValidatedTokens()


_CALLER_READS: dict = {}


def _caller_read(user_model) -> JoinedRead:
    """The user named by ``USER_ID_FIELD`` with their tenant: ``select_related("tenant")
    .get(...)`` as one statement written once (``config.rows``; every DRF request and
    every caller-cache miss reads it)."""
    read = _CALLER_READS.get(user_model)
    if read is None:
        column = user_model._meta.get_field(api_settings.USER_ID_FIELD).column
        read = _CALLER_READS[user_model] = JoinedRead(user_model, "tenant", where=lambda qn: f"m.{qn(column)} = %s")
    return read


def _remember(user) -> None:
    """Puts the caller in the context that logs, tasks and audits read."""
    user_id_var.set(user.pk)
    tenant_id_var.set(user.tenant_id)


def _tenant_active(user) -> bool:
    """Whether ``user``'s tenant may use the API (``user.tenant`` is loaded with the user)."""
    return bool(user.tenant_id) and user.tenant.is_active


class JWTAuthentication(authentication.JWTAuthentication):
    """simplejwt's, refusing users of a deactivated tenant, plus the caller in the request
    context.

    The user and their tenant come in one query (a join) on every request of the DRF
    views, so a deactivated user or tenant is refused from its next request. The row read
    is remembered in the per-process caller cache (``config.api.callers``) that only the
    async fast paths read (``aauthenticate``; refused there within
    ``AUTH_CALLER_CACHE_SECONDS``, at once when the change went through this process's
    ORM). The per-tenant rate limit reads the tenant's tier from the same row."""

    def get_user(self, validated_token):
        return self.check_user(self.load_user(validated_token), validated_token)

    @staticmethod
    def user_id(validated_token):
        try:
            return validated_token[api_settings.USER_ID_CLAIM]
        except KeyError as exc:
            raise InvalidToken(_("Token contained no recognizable user identification")) from exc

    def load_user(self, validated_token):
        """The token's user with the tenant joined (one query, ``_caller_read``),
        remembered in the caller cache. Sync: the database."""
        field = self.user_model._meta.get_field(api_settings.USER_ID_FIELD)
        user = _caller_read(self.user_model).one([field.get_prep_value(self.user_id(validated_token))])
        if user is None:
            raise AuthenticationFailed(_("User not found"), code="user_not_found")
        callers.put(user)
        return user

    @staticmethod
    def check_user(user, validated_token):
        """simplejwt's checks (active, password not changed since the token) and ours
        (tenant active). CPU only."""
        if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise AuthenticationFailed(_("User is inactive"), code="user_inactive")
        if api_settings.CHECK_REVOKE_TOKEN and validated_token.get(
            api_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise AuthenticationFailed(_("The user's password has been changed."), code="password_changed")
        if not _tenant_active(user):
            raise AuthenticationFailed("Tenant is inactive", code="tenant_inactive")
        return user

    async def acaller(self, validated_token):
        """The checked caller a validated token names, for async code: from the caller
        cache, else one query in a thread (``load_user``). Raises as ``get_user``."""
        user = callers.get(self.user_id(validated_token))
        if user is None:
            user = await sync_to_async(self.load_user)(validated_token)
        return self.check_user(user, validated_token)

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            _remember(result[0])
        return result

    async def aauthenticate(self, request):
        """For async views (``config.api.fast``): the caller of a valid ``Authorization:
        Bearer`` header, or None when there is no header or anything is wrong with it
        (the caller then lets DRF's path answer, with its exact 401). The token is checked
        in the event loop (once per token until its expiry: ``validated_tokens``); the
        database is reached (one thread hop) only when the caller cache misses."""
        header = self.get_header(request)
        if header is None:
            return None
        try:
            raw_token = self.get_raw_token(header)
            if raw_token is None:
                return None
            validated = validated_tokens.get(raw_token)
            if validated is None:
                validated = self.get_validated_token(raw_token)
                validated_tokens.put(raw_token, validated)
            user = await self.acaller(validated)
        except (InvalidToken, TokenError, AuthenticationFailed):
            return None
        _remember(user)
        return user


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


async def aaccess_from_token(raw_token: str | None) -> Access | None:
    """``access_from_token`` for async callers (the SSE views): the token checked in the
    event loop, the caller from the caller cache (``config.api.callers``: refused within
    ``AUTH_CALLER_CACHE_SECONDS`` of a change made elsewhere, at once when it went through
    this process's ORM), else one query in a thread."""
    if not raw_token:
        return None
    auth = JWTAuthentication()
    try:
        validated = auth.get_validated_token(raw_token.encode() if isinstance(raw_token, str) else raw_token)
        user = await auth.acaller(validated)
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
