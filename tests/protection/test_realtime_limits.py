"""The tenant's budget also covers the non-DRF entry points: SSE views and WebSocket frames."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from config.api.ratelimit import tenant_usage
from tests.accounts.factories import UserFactory
from tests.chat.streams import access_token, communicator
from tests.conversations.factories import ConversationFactory

pytestmark = pytest.mark.django_db(transaction=True)


async def _owner_and_conversation():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    # These tests count within one fixed one-minute window; the WebSocket machinery cannot
    # run under a frozen clock, so start with the window at least 5 s from its end.
    usage = await database_sync_to_async(tenant_usage)(user=user, increment=False)
    if usage.retry_after < 5:
        await asyncio.sleep(usage.retry_after + 0.2)
    return user, conversation


async def test_websocket_frames_over_the_budget_get_a_rate_limited_error_event(settings):
    settings.RATE_LIMIT_FREE = 3
    user, conversation = await _owner_and_conversation()
    comm = await communicator(user, conversation.id)
    connected, _ = await comm.connect()  # 1 of 3

    read = {"type": "message.read", "message_id": 999999}
    await comm.send_json_to({**read, "ref": "t1"})  # 2 (answered: not found)
    await comm.send_json_to({**read, "ref": "t2"})  # 3
    await comm.send_json_to({"type": "ping", "ref": "p1"})  # free
    await comm.send_json_to({"type": "typing", "ref": "ty"})  # free (throttled on its own)
    await comm.send_json_to({**read, "ref": "t3"})  # refused
    frames = [await comm.receive_json_from(timeout=5) for _ in range(5)]
    await comm.disconnect()

    assert connected
    errors = [f for f in frames if f["type"] == "error" and f["data"]["code"] == "rate_limited"]
    assert [f["data"]["ref"] for f in errors] == ["t3"]
    assert 1 <= errors[0]["data"]["details"]["retry_after"] <= 60
    assert {"type": "pong", "seq": None, "data": {"ref": "p1"}} in frames
    usage = await database_sync_to_async(tenant_usage)(user=user, increment=False)
    assert usage.remaining == 0


async def test_websocket_connect_over_the_budget_closes_4429(settings):
    settings.RATE_LIMIT_FREE = 1
    user, conversation = await _owner_and_conversation()
    await database_sync_to_async(tenant_usage)(user=user)
    comm = await communicator(user, conversation.id)

    connected, _ = await comm.connect()
    closed = await comm.receive_output(timeout=5)
    await comm.disconnect()

    assert connected
    assert closed == {"type": "websocket.close", "code": 4429}


async def test_sse_views_count_and_refuse_with_the_envelope(settings):
    settings.RATE_LIMIT_FREE = 1
    user, conversation = await _owner_and_conversation()
    headers = {"Authorization": f"Bearer {await access_token(user)}"}
    client = AsyncClient()

    first = await client.post(
        "/api/v1/chat/stream", {"message": "hi"}, content_type="application/json", headers=headers
    )
    async for _ in first.streaming_content:
        pass
    refused_stream = await client.post(
        "/api/v1/chat/stream", {"message": "hi"}, content_type="application/json", headers=headers
    )
    refused_events = await client.get(f"/api/v1/conversations/{conversation.id}/events", headers=headers)

    assert first.status_code == 200
    assert first["X-RateLimit-Limit"] == "1" and first["X-RateLimit-Remaining"] == "0"
    for response in (refused_stream, refused_events):
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(response["Retry-After"]) <= 60
        assert response["X-RateLimit-Remaining"] == "0"


async def test_typing_frames_are_passed_on_at_most_once_a_second_and_not_counted(settings):
    settings.RATE_LIMIT_FREE = 2
    user, conversation = await _owner_and_conversation()
    comm = await communicator(user, conversation.id)
    await comm.connect()  # 1 of 2

    for _ in range(5):
        await comm.send_json_to({"type": "typing", "is_typing": True})
    first = await comm.receive_json_from(timeout=5)
    nothing_more = await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()

    assert first["type"] == "typing"
    assert nothing_more
    usage = await database_sync_to_async(tenant_usage)(user=user, increment=False)
    assert usage.remaining == 1
