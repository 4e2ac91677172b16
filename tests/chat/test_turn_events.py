"""What listeners of a conversation hear of a turn answered in the request: the same events
in the same order as the caller's own stream, whether the group's sends go one by one or
together at the end of a fast turn (``conversations.events.BatchingPublisher``)."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat.services import runs, turns
from conversations.events import event_frame, group_name, group_send_many
from tests.accounts.factories import UserFactory


async def _drain(layer, channel) -> list[dict]:
    frames = []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), 1)
        except TimeoutError:
            return frames
        frames.append(message["frame"])


@pytest.mark.django_db(transaction=True)
async def test_group_listeners_hear_a_sync_turn_like_its_caller():
    user = await database_sync_to_async(UserFactory)()
    first = await database_sync_to_async(turns.turn_answer)(user=user, content="hello")
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group_name(first.conversation.pk), channel)
    streamed = []

    turn = await database_sync_to_async(turns.turn_answer)(
        user=user,
        content="add a task to buy milk",
        conversation_id=first.conversation.pk,
        delivery=runs.Delivery.in_request(sink=streamed.append),
    )

    heard = await _drain(layer, channel)
    assert turn.outcome == runs.Outcome.COMPLETED
    kinds = [f["type"] for f in heard]
    assert kinds[0] == "message.created" and heard[0]["seq"] == turn.message.seq
    # After the user's message, exactly what the caller's own stream got, in its order.
    assert heard[1:] == streamed
    assert [k for k in kinds if k != "message.delta"] == [
        "message.created",
        "run.started",
        "tool.call",
        "tool.result",
        "message.completed",
        "run.completed",
    ]


@pytest.mark.django_db(transaction=True)
async def test_group_send_many_keeps_order_and_passes_over_an_empty_group():
    layer = get_channel_layer()
    frames = [event_frame("message.delta", {"delta": str(n)}) for n in range(5)]

    await sync_to_async(group_send_many)(987654, frames)  # nobody listens: nothing fails

    channel = await layer.new_channel()
    await layer.group_add(group_name(987654), channel)
    await sync_to_async(group_send_many)(987654, frames)
    assert await _drain(layer, channel) == frames
    await layer.group_discard(group_name(987654), channel)


@pytest.mark.django_db(transaction=True)
def test_a_fast_turn_gives_its_connection_back_before_waiting_for_its_events(monkeypatch):
    """The local agent's turn publishes its events together at its end and waits for them:
    its pooled database connection is back in the pool by then (it held other requests'
    turns up while the publisher worked), and nothing after it takes one again."""
    from django.db import connection
    from django.db.backends.signals import connection_created

    from conversations import events

    user = UserFactory()
    seen = []
    original = events.group_send_many
    monkeypatch.setattr(
        events, "group_send_many", lambda *args: (seen.append(connection.connection is None), original(*args))
    )
    opened = []
    connection_created.connect(lambda **kwargs: opened.append(1), weak=False, dispatch_uid="turn-events-test")
    try:
        turn = turns.turn_answer(user=user, content="add a task to buy milk")
        assert turn.outcome == runs.Outcome.COMPLETED
        assert turn.run.reply_message.content  # the reply, from what the turn kept
        opened_during_turn = len(opened)
    finally:
        connection_created.disconnect(dispatch_uid="turn-events-test")
    assert seen == [True]
    assert opened_during_turn <= 1  # at most the turn's own, none after the release
