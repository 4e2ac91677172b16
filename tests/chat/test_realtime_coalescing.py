"""Streamed answers reach the channel layer as a few coalesced ``message.delta`` events,
with the same text, in order (issue 11 / 15)."""

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from chat.agent.runner import DeltaCoalescer
from tests.accounts.factories import UserFactory
from tests.chat.streams import access_token, communicator, parse_sse, receive_until
from tests.conversations.factories import ConversationFactory


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_coalescer_sends_the_first_piece_at_once_then_one_delta_per_window_or_size():
    sent, clock = [], Clock()
    deltas = DeltaCoalescer(
        lambda kind, data: sent.append((kind, data["delta"])), window=0.04, max_chars=10, clock=clock
    )

    deltas.add("Hello ")  # first piece: out at once
    deltas.add("big ")
    clock.now += 0.01
    deltas.add("wide ")  # within the window and under 10 characters: held
    held_after_window = list(sent)
    clock.now += 0.05
    deltas.add("world")  # the window passed: "big wide world" goes out
    deltas.add("0123456789")  # 10 characters held: out at once
    deltas.add("!")
    deltas.flush()
    deltas.flush()  # nothing held: nothing sent

    assert held_after_window == [("message.delta", "Hello ")]
    assert sent == [
        ("message.delta", "Hello "),
        ("message.delta", "big wide world"),
        ("message.delta", "0123456789"),
        ("message.delta", "!"),
    ]


def test_coalescer_ignores_empty_pieces():
    sent = []
    deltas = DeltaCoalescer(lambda kind, data: sent.append(data["delta"]), window=1.0, max_chars=100)

    deltas.add("")
    deltas.flush()

    assert sent == []


@pytest.mark.django_db(transaction=True)
async def test_a_long_answer_is_a_few_publishes_with_the_same_text_on_sse_and_websocket(fake_openai, settings):
    settings.REALTIME_DELTA_FLUSH_CHARS = 400
    settings.REALTIME_DELTA_FLUSH_SECONDS = 10.0  # only size and the end of the answer flush
    words = [f"word{i}" for i in range(300)]  # about 2,400 characters, 300 chunks from the model
    fake_openai.reply(" ".join(words))
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    listener = await communicator(user, conversation.id)
    assert (await listener.connect())[0]

    response = await AsyncClient().post(
        "/api/v1/chat/stream",
        {"message": "tell me a long story", "conversation_id": conversation.id},
        content_type="application/json",
        headers={"Authorization": f"Bearer {await access_token(user)}"},
    )
    events = parse_sse(b"".join([chunk async for chunk in response.streaming_content]).decode())
    frames = await receive_until(listener, lambda f: f["type"] == "run.completed")
    await listener.disconnect()

    sse_deltas = [e["data"]["data"]["delta"] for e in events if e["event"] == "message.delta"]
    ws_deltas = [f["data"]["delta"] for f in frames if f["type"] == "message.delta"]
    reply = next(e["data"]["data"]["content"] for e in events if e["event"] == "message.completed")
    assert reply == " ".join(words)
    # 300 pieces from the model: the first alone, then one delta per 400 characters.
    assert 2 <= len(sse_deltas) <= 1 + len(reply) // 400 + 1
    assert sse_deltas == ws_deltas  # every listener sees the same events
    assert "".join(sse_deltas) == reply
    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["message.created", "run.started"] and kinds[-2:] == ["message.completed", "run.completed"]
    assert set(kinds[2:-2]) == {"message.delta"}


@pytest.mark.django_db(transaction=True)
async def test_a_tool_calling_turn_keeps_its_event_order_with_coalesced_deltas(fake_openai, settings):
    settings.REALTIME_DELTA_FLUSH_SECONDS = 10.0
    fake_openai.script.append({"tool_calls": [{"id": "call_1", "name": "list_tasks", "arguments": "{}"}]})
    fake_openai.reply("You have no tasks yet, add one any time")
    user = await database_sync_to_async(UserFactory)()

    response = await AsyncClient().post(
        "/api/v1/chat/stream",
        {"message": "what are my tasks"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {await access_token(user)}"},
    )
    events = parse_sse(b"".join([chunk async for chunk in response.streaming_content]).decode())

    kinds = [e["event"] for e in events]
    assert kinds[:4] == ["message.created", "run.started", "tool.call", "tool.result"]
    assert kinds[4:] == ["message.delta", "message.delta", "message.completed", "run.completed"]
    deltas = "".join(e["data"]["data"]["delta"] for e in events if e["event"] == "message.delta")
    assert deltas == events[-2]["data"]["data"]["content"] == "You have no tasks yet, add one any time"
