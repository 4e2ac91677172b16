"""SSE and WebSocket when Redis (the channel layer) or the database is unreachable: a 503
envelope or a 1013 close the client can retry, never an unhandled crash."""

import socket

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from tests.accounts.factories import UserFactory
from tests.chat.streams import access_token, communicator
from tests.conversations.factories import ConversationFactory


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def channel_layer_down(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{_closed_port()}/0"]},
        }
    }


@pytest.mark.django_db(transaction=True)
async def test_conversation_events_with_the_channel_layer_down_is_503_with_retry_after(channel_layer_down):
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)

    response = await AsyncClient().get(
        f"/api/v1/conversations/{conversation.id}/events",
        headers={"Authorization": f"Bearer {await access_token(user)}"},
    )

    assert response.status_code == 503
    assert int(response["Retry-After"]) >= 1
    error = response.json()["error"]
    assert (error["code"], error["details"]) == ("dependency_unavailable", {"dependency": "redis"})


@pytest.mark.django_db(transaction=True)
async def test_websocket_with_the_channel_layer_down_closes_1013(channel_layer_down):
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    comm = await communicator(user, conversation.id)

    connected, _ = await comm.connect(timeout=10)

    assert connected
    assert await comm.receive_output(timeout=10) == {"type": "websocket.close", "code": 1013}
    await comm.disconnect()
