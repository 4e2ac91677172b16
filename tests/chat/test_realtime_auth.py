"""WebSocket handshake authentication (``config.api.ws_auth.JWTAuthMiddleware``): the token
becomes ``scope["user"]`` before any consumer runs."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from config.api.ws_auth import JWTAuthMiddleware
from tests.accounts.factories import UserFactory
from tests.chat.streams import access_token


class ScopeRecorder:
    """A minimal ASGI app standing in for the consumer: remembers the scope it was given."""

    def __init__(self):
        self.scope = None

    async def __call__(self, scope, receive, send):
        self.scope = scope
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1000})


async def handshake(path: str, subprotocols=None) -> dict:
    recorder = ScopeRecorder()
    comm = WebsocketCommunicator(JWTAuthMiddleware(recorder), path, subprotocols=subprotocols)
    await comm.connect()
    await comm.disconnect()
    return recorder.scope


@pytest.mark.django_db(transaction=True)
async def test_query_token_becomes_the_scope_user_with_its_expiry():
    user = await database_sync_to_async(UserFactory)()

    scope = await handshake(f"/ws/?token={await access_token(user)}")

    assert scope["user"].pk == user.pk
    assert scope["token_expires_at"] > 0
    assert scope["accepted_subprotocol"] is None and scope["auth_unavailable"] is None


@pytest.mark.django_db(transaction=True)
async def test_bearer_subprotocol_token_is_accepted_with_bearer():
    user = await database_sync_to_async(UserFactory)()

    scope = await handshake("/ws/", subprotocols=["bearer", await access_token(user)])

    assert scope["user"].pk == user.pk and scope["accepted_subprotocol"] == "bearer"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/ws/", "/ws/?token=not-a-token"])
async def test_missing_or_bad_token_is_an_anonymous_scope(path):
    scope = await handshake(path)

    assert not scope["user"].is_authenticated and scope["token_expires_at"] is None
