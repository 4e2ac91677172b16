"""Issue 9, real-time hardening, in process (on the Redis channel layer when REDIS_URL is
set): consumers clean up however they end, open connections are re-checked and closed at
token expiry, bad frames do not kill the consumer, a listener without a resume point gets
live events only, and both SSE endpoints take the token as a header or ``?token=``."""

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.test import AsyncClient
from prometheus_client import REGISTRY
from rest_framework_simplejwt.tokens import AccessToken

from chat.models import AgentRun
from conversations.events import group_name
from conversations.models import Message
from tests.accounts.factories import UserFactory
from tests.chat.streams import access_token, communicator, parse_sse, read_sse
from tests.conversations.factories import ConversationFactory, add_messages
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db(transaction=True)


def gauge() -> float:
    return REGISTRY.get_sample_value("websocket_connections_open") or 0.0


async def group_members(conversation_id: int) -> list[str]:
    """The channels subscribed to a conversation's group, on either channel layer."""
    layer, group = get_channel_layer(), group_name(conversation_id)
    if hasattr(layer, "_get_group_channel_name"):  # pub/sub: membership lives in this process
        return list(layer.groups.get(layer._get_group_channel_name(group), set()))
    if hasattr(layer, "groups"):  # InMemoryChannelLayer
        return list(layer.groups.get(group, {}))
    connection = layer.connection(layer.consistent_hash(group))
    return [m.decode() for m in await connection.zrange(layer._group_key(group), 0, -1)]


def short_token(user, seconds: float) -> str:
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=seconds))
    return str(token)


async def listener():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    return user, conversation


async def connected(comm) -> None:
    """Connects and waits until connect() has finished (subscribed): accept() comes first."""
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "ping", "ref": "ready"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong", "seq": None, "data": {"ref": "ready"}}


async def sse_opened(response) -> None:
    """Reads the stream's first chunk, ``: open``, sent once it has subscribed."""
    response._sse_iterator = aiter(response.streaming_content)
    first = await asyncio.wait_for(anext(response._sse_iterator), 5)
    assert (first.decode() if isinstance(first, bytes) else first) == ": open\n\n"


async def stored_counts(conversation) -> tuple[int, int]:
    messages = await database_sync_to_async(Message.objects.filter(conversation=conversation).count)()
    runs = await database_sync_to_async(AgentRun.objects.count)()
    return messages, runs


# ---------------------------------------------------------------- channel layer settings


def test_channel_layer_read_timeout_outlasts_the_blocking_read(real_stack, settings):
    layer = get_channel_layer()
    if settings.CHANNEL_LAYER == "pubsub":
        # The pub/sub layer's receiver polls its subscription with a 0.1 s read; redis-py's
        # read timeout must stay above it (the 20 s idle listeners are in tests/e2e).
        [host] = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
        assert host["socket_timeout"] > 0.1
        return
    [host] = layer.hosts
    assert host["socket_timeout"] > layer.brpop_timeout


# ---------------------------------------------------------------- cleanup however a consumer ends


async def test_a_consumer_whose_handler_raises_leaves_its_group_and_the_gauge():
    user, conversation = await listener()
    before, members = gauge(), set(await group_members(conversation.id))
    comm = await communicator(user, conversation.id)
    await connected(comm)
    assert len(set(await group_members(conversation.id)) - members) == 1 and gauge() == before + 1

    # An event the handler cannot take (no "frame"): the handler raises, the consumer dies.
    await get_channel_layer().group_send(group_name(conversation.id), {"type": "conversation.event"})
    with pytest.raises(KeyError):
        await comm.receive_output(timeout=5)

    assert set(await group_members(conversation.id)) == members
    assert gauge() == before


async def test_a_cancelled_consumer_leaves_its_group_and_the_gauge():
    user, conversation = await listener()
    before, members = gauge(), set(await group_members(conversation.id))
    comm = await communicator(user, conversation.id)
    await connected(comm)
    assert len(set(await group_members(conversation.id)) - members) == 1

    comm.future.cancel()
    await asyncio.wait([comm.future], timeout=5)

    assert comm.future.cancelled()
    assert set(await group_members(conversation.id)) == members
    assert gauge() == before


# ---------------------------------------------------------------- re-checking an open WebSocket


async def test_websocket_closes_4401_when_the_token_expires_and_serves_nothing_after():
    user, conversation = await listener()
    comm = await communicator(user, conversation.id, token=short_token(user, 2))
    await connected(comm)

    closed = await comm.receive_output(timeout=5)  # at exp, without any client frame
    await comm.send_json_to({"type": "message.send", "content": "too late"})

    assert closed == {"type": "websocket.close", "code": 4401, "reason": "token expired"}
    assert await comm.receive_nothing(timeout=0.3)
    assert await stored_counts(conversation) == (0, 0)
    await comm.disconnect()


@pytest.mark.parametrize("who", ["user", "tenant"])
async def test_websocket_closes_4401_on_the_next_frame_once_deactivated(who):
    user, conversation = await listener()
    comm = await communicator(user, conversation.id)
    await connected(comm)

    target = user if who == "user" else user.tenant
    target.is_active = False
    await database_sync_to_async(target.save)(update_fields=["is_active"])
    await comm.send_json_to({"type": "message.send", "content": "add a task to buy milk"})

    closed = await comm.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401, "reason": "user or tenant inactive"}
    assert await stored_counts(conversation) == (0, 0)  # no message stored, no run
    await comm.disconnect()


async def test_a_listening_websocket_closes_4401_before_the_next_event_once_deactivated(settings):
    settings.REALTIME_RECHECK_SECONDS = 0  # re-check before every event
    user, conversation = await listener()
    comm = await communicator(user, conversation.id)
    await connected(comm)

    user.tenant.is_active = False
    await database_sync_to_async(user.tenant.save)(update_fields=["is_active"])
    await database_sync_to_async(add_messages)(conversation, 1)  # someone else's message

    closed = await comm.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401, "reason": "user or tenant inactive"}
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


# ---------------------------------------------------------------- frames that are not JSON text


async def test_non_json_and_binary_frames_answer_invalid_frame_and_keep_the_connection():
    user, conversation = await listener()
    comm = await communicator(user, conversation.id)
    await connected(comm)

    await comm.send_to(text_data="{not json")
    not_json = await comm.receive_json_from(timeout=5)
    await comm.send_to(bytes_data=b'{"type": "ping"}')
    binary = await comm.receive_json_from(timeout=5)
    await comm.send_to(text_data="[" * 100_000)
    deep = await comm.receive_json_from(timeout=5)
    await comm.send_json_to({"type": "ping", "ref": "after"})
    pong = await comm.receive_json_from(timeout=5)

    for frame in (not_json, binary, deep):
        assert frame["type"] == "error" and frame["data"]["code"] == "invalid_frame", frame
    assert pong == {"type": "pong", "seq": None, "data": {"ref": "after"}}
    await comm.disconnect()


async def test_frames_postgresql_cannot_store_are_refused_and_store_nothing():
    """The REST bodies' strict loader decodes frames too: a NUL character, a lone surrogate
    or an overflowing number is an invalid_frame error, not a handler that fails in the
    database; nothing is stored and the connection stays."""
    user, conversation = await listener()
    comm = await communicator(user, conversation.id)
    await connected(comm)
    before = await database_sync_to_async(Message.objects.filter(conversation=conversation).count)()

    replies = []
    for text in (
        '{"type": "message.send", "content": "a\\u0000b"}',
        '{"type": "message.send", "content": "\\ud800"}',
        '{"type": "message.send", "content": "x", "attachments": [{"n": 1e400}]}',
    ):
        await comm.send_to(text_data=text)
        replies.append(await comm.receive_json_from(timeout=5))

    for frame in replies:
        assert frame["type"] == "error" and frame["data"]["code"] == "invalid_frame", frame
    assert "NUL" in replies[0]["data"]["message"]
    after = await database_sync_to_async(Message.objects.filter(conversation=conversation).count)()
    assert after == before
    await comm.disconnect()


# ---------------------------------------------------------------- no resume point: live only


async def test_websocket_without_resume_point_gets_only_new_messages():
    user, conversation = await listener()
    await database_sync_to_async(add_messages)(conversation, 3)
    comm = await communicator(user, conversation.id)
    await connected(comm)

    await database_sync_to_async(add_messages)(conversation, 1)
    frame = await comm.receive_json_from(timeout=5)

    assert (frame["type"], frame["seq"]) == ("message.created", 4)
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()


async def test_sse_events_without_resume_point_gets_only_new_messages():
    user, conversation = await listener()
    await database_sync_to_async(add_messages)(conversation, 3)
    response = await AsyncClient().get(
        f"/api/v1/conversations/{conversation.id}/events",
        headers={"Authorization": f"Bearer {await access_token(user)}"},
    )
    await sse_opened(response)

    await database_sync_to_async(add_messages)(conversation, 1)
    events = await read_sse(response, until=lambda ev: len(ev) >= 1)

    assert [(e["event"], e["id"]) for e in events] == [("message.created", "4")]


@pytest.mark.parametrize("after_seq", ["abc", "-1", "1.5"])
async def test_websocket_bad_resume_point_closes_4400(after_seq):
    user, conversation = await listener()
    comm = await communicator(user, conversation.id, query=f"after_seq={after_seq}")
    await comm.connect()

    closed = await comm.receive_output(timeout=5)

    assert closed["code"] == 4400 and "after_seq" in closed["reason"]
    await comm.disconnect()


@pytest.mark.parametrize("after_seq", ["abc", "-1"])
async def test_sse_bad_resume_point_is_400(after_seq):
    user, conversation = await listener()
    response = await AsyncClient().get(
        f"/api/v1/conversations/{conversation.id}/events?after_seq={after_seq}",
        headers={"Authorization": f"Bearer {await access_token(user)}"},
    )
    assert_error(response, 400, "validation_error")


# ---------------------------------------------------------------- re-checking an open SSE stream


async def read_to_end(response, timeout: float = 5.0) -> str:
    chunks = []

    async def drain():
        async for chunk in response.streaming_content:
            chunks.append(chunk.decode() if isinstance(chunk, bytes) else chunk)

    await asyncio.wait_for(drain(), timeout)
    return "".join(chunks)


async def test_sse_events_end_with_an_error_event_at_token_expiry(settings):
    settings.SSE_HEARTBEAT_SECONDS = 0.2
    user, conversation = await listener()
    response = await AsyncClient().get(f"/api/v1/conversations/{conversation.id}/events?token={short_token(user, 2)}")
    assert response.status_code == 200

    body = await read_to_end(response)  # the stream ends by itself

    assert ": heartbeat" in body
    events = parse_sse(body)
    assert [(e["event"], e["data"]["data"]["code"]) for e in events] == [("error", "token_expired")]


@pytest.mark.parametrize("who", ["user", "tenant"])
async def test_sse_events_end_at_the_next_heartbeat_once_deactivated(settings, who):
    settings.SSE_HEARTBEAT_SECONDS = 0.2
    user, conversation = await listener()
    response = await AsyncClient().get(
        f"/api/v1/conversations/{conversation.id}/events",
        headers={"Authorization": f"Bearer {await access_token(user)}"},
    )
    await sse_opened(response)

    target = user if who == "user" else user.tenant
    target.is_active = False
    await database_sync_to_async(target.save)(update_fields=["is_active"])
    body = await read_to_end(response)

    assert [(e["event"], e["data"]["data"]["code"]) for e in parse_sse(body)] == [("error", "not_authenticated")]


async def test_a_busy_sse_events_stream_is_rechecked_too(settings):
    """Events arriving faster than the heartbeat never skip the re-check: once the user is
    deactivated, the next event past REALTIME_RECHECK_SECONDS ends the stream instead."""
    settings.SSE_HEARTBEAT_SECONDS = 60
    settings.REALTIME_RECHECK_SECONDS = 0
    user, conversation = await listener()
    response = await AsyncClient().get(
        f"/api/v1/conversations/{conversation.id}/events",
        headers={"Authorization": f"Bearer {await access_token(user)}"},
    )
    await sse_opened(response)

    user.is_active = False
    await database_sync_to_async(user.save)(update_fields=["is_active"])
    await database_sync_to_async(add_messages)(conversation, 1)
    body = await read_to_end(response)

    assert [(e["event"], e["data"]["data"]["code"]) for e in parse_sse(body)] == [("error", "not_authenticated")]


# ---------------------------------------------------------------- SSE auth: header or ?token=


@pytest.mark.parametrize("how", ["header", "query"])
async def test_both_sse_endpoints_take_the_token_as_header_or_query(how):
    user, conversation = await listener()
    await database_sync_to_async(add_messages)(conversation, 1)
    token = await access_token(user)
    headers = {"Authorization": f"Bearer {token}"} if how == "header" else {}
    query = f"?token={token}" if how == "query" else ""
    client = AsyncClient()

    events = await client.get(
        f"/api/v1/conversations/{conversation.id}/events{query}", headers={**headers, "Last-Event-ID": "0"}
    )
    replayed = await read_sse(events, until=lambda ev: len(ev) >= 1)
    chat = await client.post(
        f"/api/v1/chat/stream{query}",
        {"message": "hello", "conversation_id": conversation.id},
        content_type="application/json",
        headers=headers,
    )
    chat_events = parse_sse(b"".join([c async for c in chat.streaming_content]).decode())

    assert events.status_code == 200 and [e["id"] for e in replayed] == ["1"]
    assert chat.status_code == 200
    assert [e["event"] for e in chat_events][-1] == "run.completed"


async def test_both_sse_endpoints_refuse_a_missing_or_expired_token():
    user, conversation = await listener()
    expired = short_token(user, -1)
    client = AsyncClient()

    for query in ("", f"?token={expired}"):
        events = await client.get(f"/api/v1/conversations/{conversation.id}/events{query}")
        chat = await client.post(f"/api/v1/chat/stream{query}", {"message": "hi"}, content_type="application/json")
        assert_error(events, 401, "not_authenticated")
        assert_error(chat, 401, "not_authenticated")
