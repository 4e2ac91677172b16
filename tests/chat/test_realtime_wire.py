"""One wire shape per message: REST, the SSE events, the WebSocket and the exports render a
stored message with the same renderer, datetimes spelled as DRF spells them (``Z``)."""

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from conversations.services import message_mark_read
from tests.accounts.factories import UserFactory
from tests.chat.streams import access_token, communicator, parse_sse, read_sse, receive_until
from tests.conftest import client_for
from tests.conversations.factories import ConversationFactory, add_messages


@pytest.mark.django_db(transaction=True)
async def test_rest_sse_websocket_and_export_render_a_message_alike():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    [message] = await database_sync_to_async(add_messages)(conversation, 1)
    await database_sync_to_async(message_mark_read)(message=message, user=user)  # read_at set too
    api = await database_sync_to_async(client_for)(user)

    rest = (await database_sync_to_async(api.get)(f"/api/v1/conversations/{conversation.id}/messages")).json()
    exported = (await database_sync_to_async(api.get)(f"/api/v1/conversations/{conversation.id}/export")).json()
    sse = await AsyncClient().get(
        f"/api/v1/conversations/{conversation.id}/events?after_seq=0",
        headers={"Authorization": f"Bearer {await access_token(user)}"},
    )
    [sse_event] = await read_sse(sse, until=lambda events: len(events) == 1)
    comm = await communicator(user, conversation.id, query="after_seq=0")
    await comm.connect()
    [ws_frame] = await receive_until(comm, lambda frame: frame["type"] == "message.created")
    await comm.disconnect()

    [rest_message] = rest["results"]
    assert rest_message["created_at"].endswith("Z") and rest_message["read_at"].endswith("Z")
    assert sse_event["data"]["data"] == rest_message
    assert ws_frame["data"] == rest_message
    assert exported["messages"] == [rest_message]


@pytest.mark.django_db(transaction=True)
async def test_live_websocket_events_and_the_chat_stream_render_messages_like_rest():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    comm = await communicator(user, conversation.id)
    await comm.connect()
    api = await database_sync_to_async(client_for)(user)

    await comm.send_json_to({"type": "message.send", "content": "hello", "ref": "r1"})
    frames = await receive_until(comm, lambda frame: frame["type"] == "message.completed")
    await comm.disconnect()
    streamed = await AsyncClient().post(
        "/api/v1/chat/stream",
        {"message": "hello again", "conversation_id": conversation.id},
        content_type="application/json",
        headers={"Authorization": f"Bearer {await access_token(user)}"},
    )
    events = parse_sse(b"".join([chunk async for chunk in streamed.streaming_content]).decode())
    rest = (await database_sync_to_async(api.get)(f"/api/v1/conversations/{conversation.id}/messages")).json()

    live = [frame["data"] for frame in frames if frame["seq"] is not None]
    stream = [event["data"]["data"] for event in events if event["id"] is not None]
    assert live + stream == rest["results"]
    assert [message["seq"] for message in rest["results"]] == [1, 2, 3, 4]
