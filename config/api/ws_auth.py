"""WebSocket authentication as ASGI middleware (as the Channels docs do it): the consumer
reads who is calling from the scope and never sees a token.

The access token comes as ``?token=`` or in ``Sec-WebSocket-Protocol`` (``bearer, <token>``,
or the token alone). The middleware sets, for the app it wraps:

- ``scope["user"]``: the active user of an active tenant the token names, else
  ``AnonymousUser`` (the consumer closes with 4401);
- ``scope["token_expires_at"]``: the token's ``exp`` (seconds since the epoch), or None;
- ``scope["accepted_subprotocol"]``: the subprotocol the server answers with (``bearer``,
  or the token when it was sent alone; None for ``?token=``);
- ``scope["auth_unavailable"]``: the dependency (``database``...) that was down while the
  token was checked, else None; the consumer closes with 1013 so the client retries.
"""

import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser

from .auth import access_from_token
from .errors import dependency_failure

logger = logging.getLogger(__name__)


def token_and_subprotocol(scope) -> tuple[str | None, str | None]:
    """The access token a WebSocket handshake carries, and the subprotocol to accept."""
    query = parse_qs(scope.get("query_string", b"").decode())
    if query.get("token"):
        return query["token"][0], None
    protocols = scope.get("subprotocols") or []
    if len(protocols) >= 2 and protocols[0].lower() == "bearer":
        return protocols[1], protocols[0]
    if len(protocols) == 1:
        return protocols[0], protocols[0]
    return None, None


class JWTAuthMiddleware(BaseMiddleware):
    """Resolves the handshake's access token into ``scope["user"]`` (module docstring)."""

    async def __call__(self, scope, receive, send):
        scope = dict(scope)  # never change the scope the server handed us
        token, subprotocol = token_and_subprotocol(scope)
        access, unavailable = None, None
        try:
            access = await database_sync_to_async(access_from_token)(token)
        except Exception as exc:
            if (unavailable := dependency_failure(exc)) is None:
                raise
        scope["user"] = access.user if access else AnonymousUser()
        scope["token_expires_at"] = access.expires_at if access else None
        scope["accepted_subprotocol"] = subprotocol
        scope["auth_unavailable"] = unavailable
        return await super().__call__(scope, receive, send)
