"""Real time at scale (issue 15), in-process: the handshake is accepted once the socket is
subscribed, the per-user socket cap, a client that does not read, and a backlog replayed
in pages (one query each)."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connection

from chat.consumers import CLOSE_TOO_MANY_SOCKETS, CLOSE_TOO_SLOW, _RecentChecks
from config.routing import websocket_application
from conversations.events import event_frame, group_name
from conversations.models import Conversation, Message
from conversations.subscriptions import BACKLOG_PAGE
from tests.accounts.factories import UserFactory
from tests.chat.streams import access_token, communicator, receive_until
from tests.conversations.factories import ConversationFactory


async def _send_to_group(conversation_id: int, frame: dict) -> None:
    await get_channel_layer().group_send(group_name(conversation_id), {"type": "conversation.event", "frame": frame})


class StalledClient(WebsocketCommunicator):
    """A client whose side of the connection holds at most ``room`` frames: once they are
    unread, the server's send blocks, as it does for a peer that stopped reading (a full
    TCP window under a server that applies backpressure)."""

    def __init__(self, *args, room: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.room = room

    @property
    def output_queue(self):
        if self._output_queue is None:
            self._output_queue = asyncio.Queue(maxsize=self.room)
        return self._output_queue


@pytest.mark.django_db(transaction=True)
async def test_a_client_that_saw_the_accept_gets_the_very_next_event():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    comm = await communicator(user, conversation.id)

    connected, _ = await comm.connect()
    await _send_to_group(conversation.id, event_frame("typing", {"user_id": 0, "is_typing": True}))

    assert connected
    assert await comm.receive_json_from(timeout=5) == {
        "type": "typing",
        "seq": None,
        "data": {"user_id": 0, "is_typing": True},
    }
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_socket_past_the_per_user_cap_is_closed_4409_and_a_freed_slot_is_reusable(settings):
    settings.REALTIME_MAX_SOCKETS_PER_USER = 2
    user = await database_sync_to_async(UserFactory)()
    other = await database_sync_to_async(UserFactory)(tenant=user.tenant)
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    await database_sync_to_async(conversation.participants.add)(other)
    first, second = await communicator(user, conversation.id), await communicator(user, conversation.id)
    assert (await first.connect())[0] and (await second.connect())[0]

    third = await communicator(user, conversation.id)
    await third.connect()
    refused = await third.receive_output(timeout=5)
    others_socket = await communicator(other, conversation.id)  # the cap is per user
    others_connected, _ = await others_socket.connect()
    await first.disconnect()
    again = await communicator(user, conversation.id)
    again_connected, _ = await again.connect()
    await _send_to_group(conversation.id, event_frame("typing", {"user_id": 0, "is_typing": True}))

    assert refused == {
        "type": "websocket.close",
        "code": CLOSE_TOO_MANY_SOCKETS,
        "reason": "too many open sockets for this user",
    }
    assert others_connected and again_connected
    assert (await again.receive_json_from(timeout=5))["type"] == "typing"
    for comm in (second, again, others_socket):
        await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_client_that_stops_reading_loses_transient_events_then_is_closed_4408_and_resumes(settings):
    settings.REALTIME_OUTBOX_TRANSIENT_LIMIT = 3
    settings.REALTIME_OUTBOX_LIMIT = 6
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    token = await access_token(user)
    stalled = StalledClient(websocket_application, f"/ws/v1/conversations/{conversation.id}/?token={token}", room=2)
    assert (await stalled.connect())[0]

    # The client reads nothing from here on: 2 frames fill its side, 3 wait in the outbox,
    # the other deltas are dropped; durable-looking events still queue, up to the limit.
    for i in range(20):
        await _send_to_group(conversation.id, event_frame("message.delta", {"delta": f"{i} "}))
    for i in range(4):
        await _send_to_group(conversation.id, event_frame("run.started", {"run_id": i}))
    await asyncio.sleep(0.2)  # the consumer handles what the layer holds
    outputs = []
    while not outputs or outputs[-1]["type"] != "websocket.close":
        outputs.append(await stalled.receive_output(timeout=5))

    frames = [o for o in outputs if o["type"] == "websocket.send"]
    assert outputs[-1] == {
        "type": "websocket.close",
        "code": CLOSE_TOO_SLOW,
        "reason": "too slow: resume from your last seq",
    }
    assert len(frames) <= 2  # what its side held; the outbox was dropped at the close
    # Stored messages stay resumable: a reconnect from the last seq gets them.
    await database_sync_to_async(_store_messages)(conversation.id, 3)
    resumed = await communicator(user, conversation.id, query="after_seq=0")
    assert (await resumed.connect())[0]
    replayed = [await resumed.receive_json_from(timeout=5) for _ in range(3)]
    assert [(f["type"], f["seq"]) for f in replayed] == [("message.created", s) for s in (1, 2, 3)]
    await resumed.disconnect()


def _store_messages(conversation_id: int, count: int) -> None:
    conversation = Conversation.objects.get(pk=conversation_id)
    start = conversation.last_seq
    Message.objects.bulk_create(
        Message(
            tenant_id=conversation.tenant_id,
            conversation=conversation,
            seq=start + i + 1,
            role=Message.Role.USER,
            sender_id=conversation.owner_id,
            content=f"message {start + i + 1}",
        )
        for i in range(count)
    )
    Conversation.objects.filter(pk=conversation_id).update(last_seq=start + count)


class MessageQueries:
    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        if 'FROM "conversations_message"' in sql:
            self.count += 1
        return execute(sql, params, many, context)


@pytest.mark.django_db(transaction=True)
async def test_a_backlog_is_replayed_in_order_one_query_per_page():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    total = 2 * BACKLOG_PAGE + 7
    await database_sync_to_async(_store_messages)(conversation.id, total)
    counter = MessageQueries()
    # The consumer's ORM calls share one thread (thread-sensitive): count on its connection.
    await database_sync_to_async(lambda: connection.execute_wrappers.append(counter))()

    comm = await communicator(user, conversation.id, query="after_seq=5")
    assert (await comm.connect())[0]
    frames = await receive_until(comm, lambda f: f["seq"] == total, timeout=10)
    await database_sync_to_async(lambda: connection.execute_wrappers.remove(counter))()
    await _send_to_group(conversation.id, event_frame("typing", {"user_id": 0, "is_typing": True}))
    live = await comm.receive_json_from(timeout=5)
    await comm.disconnect()

    assert [f["seq"] for f in frames] == list(range(6, total + 1))
    assert counter.count == 3  # 500 + 500 + the last 2: a page per query, not a query per event
    assert live["type"] == "typing"


@pytest.mark.django_db(transaction=True)
async def test_a_listener_without_a_resume_point_costs_no_query_per_live_event():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    await database_sync_to_async(_store_messages)(conversation.id, 50)
    comm = await communicator(user, conversation.id)
    assert (await comm.connect())[0]
    counter = MessageQueries()
    await database_sync_to_async(lambda: connection.execute_wrappers.append(counter))()

    await database_sync_to_async(_store_messages)(conversation.id, 1)
    stored = await database_sync_to_async(Message.objects.get)(conversation=conversation, seq=51)
    await _send_to_group(conversation.id, event_frame("message.created", {"id": stored.pk}, 51))
    frame = await comm.receive_json_from(timeout=5)
    await database_sync_to_async(lambda: connection.execute_wrappers.remove(counter))()
    await comm.disconnect()

    assert (frame["type"], frame["seq"]) == ("message.created", 51)
    assert counter.count == 1  # the test's own lookup of the row; the listener read nothing


class UserQueries:
    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        if 'FROM "accounts_user"' in sql:
            self.count += 1
        return execute(sql, params, many, context)


@pytest.mark.django_db(transaction=True)
async def test_the_live_event_recheck_is_one_query_per_user_for_all_their_sockets(settings):
    settings.REALTIME_RECHECK_SECONDS = 60
    user = await database_sync_to_async(UserFactory)()
    checks = _RecentChecks()
    counter = UserQueries()
    await database_sync_to_async(lambda: connection.execute_wrappers.append(counter))()

    together = await asyncio.gather(*(checks.user_active(user.pk) for _ in range(20)))
    later = await checks.user_active(user.pk)
    await database_sync_to_async(lambda: connection.execute_wrappers.remove(counter))()

    assert together == [True] * 20 and later is True
    assert counter.count == 1


@pytest.mark.django_db(transaction=True)
async def test_the_shared_recheck_sees_a_deactivation_once_its_period_passed(settings):
    settings.REALTIME_RECHECK_SECONDS = 0  # every check is older than the period
    user = await database_sync_to_async(UserFactory)()
    checks = _RecentChecks()
    before = await checks.user_active(user.pk)

    await database_sync_to_async(type(user).objects.filter(pk=user.pk).update)(is_active=False)
    after = await checks.user_active(user.pk)

    assert (before, after) == (True, False)
