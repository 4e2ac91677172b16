"""Fan-out cost (issue 15): a live event costs a socket a send, not a thread hop or a JSON
encoding of its own; and the pub/sub channel layer (the default) keeps deployments that
share a Redis server apart by its channel prefix."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.core.exceptions import ImproperlyConfigured

from config.settings.channels import pubsub_prefix
from conversations.events import encode_frame, event_frame, event_message, group_name, publish
from tests.accounts.factories import UserFactory
from tests.chat.streams import communicator, receive_until
from tests.conversations.factories import ConversationFactory

pytestmark = pytest.mark.django_db(transaction=True)


async def listening():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    comm = await communicator(user, conversation.id)
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "ping", "ref": "ready"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "pong"
    return user, conversation, comm


def test_event_message_carries_the_frame_and_its_text_as_the_consumer_would_encode_it():
    frame = event_frame("message.delta", {"run_id": 1, "text": 'héllo \u2028 "q"'})
    message = event_message(frame)
    assert message == {"type": "conversation.event", "frame": frame, "text": json.dumps(frame)}
    assert json.loads(message["text"]) == frame


async def test_a_live_event_is_sent_as_the_publishers_text():
    _, conversation, comm = await listening()
    frame = event_frame("typing", {"user_id": 7, "is_typing": True})
    # A text the consumer would not produce itself proves it sends the publisher's as is.
    text = encode_frame(frame).replace(", ", ",  ")
    await get_channel_layer().group_send(
        group_name(conversation.id), {"type": "conversation.event", "frame": frame, "text": text}
    )
    assert await comm.receive_from(timeout=5) == text
    # A message without text (an older publisher) is encoded by the consumer.
    await get_channel_layer().group_send(group_name(conversation.id), {"type": "conversation.event", "frame": frame})
    assert await comm.receive_from(timeout=5) == json.dumps(frame)
    await comm.disconnect()


async def test_published_events_reach_the_socket_unchanged():
    _, conversation, comm = await listening()
    await database_sync_to_async(publish)(conversation.id, "typing", {"user_id": 1, "is_typing": False})
    assert await comm.receive_json_from(timeout=5) == {
        "type": "typing",
        "seq": None,
        "data": {"user_id": 1, "is_typing": False},
    }
    await comm.disconnect()


async def test_a_live_event_takes_no_hop_to_the_sync_thread_but_client_frames_keep_it(monkeypatch):
    """channels >= 4.2 closes old database connections through sync_to_async before every
    handler; the live-event path skips it (its database calls clean up on their own)."""
    import channels.consumer

    _, conversation, comm = await listening()
    hops = []
    real = channels.consumer.aclose_old_connections

    async def counting():
        hops.append(1)
        return await real()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counting)
    frame = event_frame("typing", {"user_id": 1, "is_typing": True})
    for _ in range(3):
        await get_channel_layer().group_send(group_name(conversation.id), event_message(frame))
    for _ in range(3):
        assert await comm.receive_json_from(timeout=5) == frame
    assert hops == []

    await comm.send_json_to({"type": "ping", "ref": "x"})
    await receive_until(comm, lambda f: f["type"] == "pong")
    assert hops == [1]
    await comm.disconnect()


# ---------------------------------------------------------------- pub/sub prefix


def test_the_pubsub_prefix_names_the_deployment_and_the_database():
    assert pubsub_prefix("asgi", "redis://h:6379/5") == "asgi.db5."
    assert pubsub_prefix("chat-prod_2", "redis://:pw@h:6379") == "chat-prod_2.db0."
    assert pubsub_prefix("asgi", "rediss://h:6380/12?ssl_cert_reqs=none") == "asgi.db12."
    for bad in ("", "a:b", "a b", "x" * 41):
        with pytest.raises(ImproperlyConfigured, match="CHANNEL_LAYER_PREFIX"):
            pubsub_prefix(bad, "redis://h/0")


def on_pubsub(settings):
    if settings.CHANNEL_LAYER != "pubsub":
        pytest.skip("this run chose CHANNEL_LAYER=core")


def test_the_default_layer_is_pubsub_with_the_test_databases_prefix(real_stack, settings):
    import os

    from tests.redis_isolation import redis_db

    on_pubsub(settings)
    config = settings.CHANNEL_LAYERS["default"]
    assert settings.CHANNEL_LAYER == "pubsub"
    assert config["BACKEND"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert config["CONFIG"]["prefix"] == f"{settings.CHANNEL_LAYER_PREFIX}.db{redis_db(os.environ['REDIS_URL'])}."


async def test_two_deployments_on_one_redis_server_do_not_hear_each_other(real_stack, settings):
    """Same server, same group name (conversation ids repeat across deployments), another
    database index: the prefixes keep the pub/sub channels apart."""
    url = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"]
    ours = RedisPubSubChannelLayer(hosts=[url], prefix=pubsub_prefix("asgi", url))
    theirs = RedisPubSubChannelLayer(hosts=[url], prefix=pubsub_prefix("asgi", url.rsplit("/", 1)[0] + "/14"))
    try:
        mine, other = await ours.new_channel(), await theirs.new_channel()
        await ours.group_add("conversation.1", mine)
        await theirs.group_add("conversation.1", other)
        await asyncio.sleep(0.2)  # both subscriptions are live
        await ours.group_send("conversation.1", {"type": "conversation.event", "n": 1})
        assert (await asyncio.wait_for(ours.receive(mine), 5))["n"] == 1
        reading = asyncio.ensure_future(theirs.receive(other))
        done, _ = await asyncio.wait({reading}, timeout=0.5)
        assert not done
        await theirs.group_send("conversation.1", {"type": "conversation.event", "n": 2})
        assert (await asyncio.wait_for(reading, 5))["n"] == 2
    finally:
        await ours.flush()
        await theirs.flush()


def test_the_served_websockets_do_not_offer_per_message_compression():
    """Each socket has its own compressor: deflating one event for 500 sockets was a third
    of the web worker's time. uvicorn offers permessage-deflate unless told not to."""
    from config.gunicorn import AppWorker

    assert AppWorker.CONFIG_KWARGS["ws_per_message_deflate"] is False


def test_the_shared_decode_serializer_decodes_one_event_once_per_process():
    from config.channel_layer import SharedDecodeMsgPackSerializer

    serializer = SharedDecodeMsgPackSerializer()
    raw = serializer.serialize(event_message(event_frame("typing", {"user_id": 1})))
    first, again = serializer.deserialize(raw), serializer.deserialize(raw)
    assert again is first and first["frame"] == {"type": "typing", "seq": None, "data": {"user_id": 1}}
    # Equal bytes from another Redis message are another message: decoded anew.
    assert serializer.deserialize(bytes(bytearray(raw))) is not first
    for n in range(SharedDecodeMsgPackSerializer.KEEP):  # only the last few are kept
        serializer.deserialize(serializer.serialize({"n": n}))
    assert serializer.deserialize(raw) is not first and serializer.deserialize(raw) == first


def test_the_pubsub_layer_uses_the_shared_decode_format(real_stack, settings):
    from config.channel_layer import SharedDecodeMsgPackSerializer

    on_pubsub(settings)
    assert isinstance(get_channel_layer()._serializer, SharedDecodeMsgPackSerializer)


async def test_readiness_probes_leave_no_pubsub_channel_behind(real_stack, settings):
    """The readiness check's round trip opens a channel; on the pub/sub layer a channel
    stays subscribed until released, so each probe on a server (whose event loop, and so
    whose layer, lives on) would leave a subscription behind."""
    import os

    import redis
    from asgiref.sync import sync_to_async

    from config.api.health import check_channel_layer

    on_pubsub(settings)
    store = redis.Redis.from_url(os.environ["REDIS_URL"])
    pattern = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] + "specific.*"
    before = len(store.pubsub_channels(pattern))
    for _ in range(3):  # as the view runs it: in a thread, the round trip on this loop
        await sync_to_async(check_channel_layer)()
    assert len(store.pubsub_channels(pattern)) == before
    assert not [name for name in get_channel_layer().channels if name.startswith(pattern[:-1])]


async def test_conversation_events_do_not_wait_behind_the_layers_publish_lock(real_stack, settings):
    """channels-redis' pub/sub shard sends one ``group_send`` at a time under an asyncio
    lock: every event of a web process waited for the one before it to come back from
    Redis (a chat turn's request thread spent most of its time there under load). Events
    go out on the layer's own client without that lock, the frames of one call in one
    pipeline, in order, the same bytes a ``group_send`` would publish."""
    from asgiref.sync import sync_to_async

    from conversations import events

    on_pubsub(settings)
    layer = get_channel_layer()
    group = group_name(424242)
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    await asyncio.sleep(0.2)  # the subscription is live
    loop = events._publisher_event_loop()

    async def hold_the_lock():  # as a publish stuck on a slow Redis would
        loop_layer = layer._get_layer()
        shard = loop_layer._get_shard(loop_layer._get_group_channel_name(group))
        await shard._lock.acquire()
        return shard

    shard = asyncio.run_coroutine_threadsafe(hold_the_lock(), loop).result(5)
    frames = [event_frame("message.delta", {"delta": str(n)}) for n in range(3)]
    stored = event_frame("message.created", {"id": 1, "content": "hi"}, seq=7)
    try:
        await asyncio.wait_for(sync_to_async(events.group_send_many)(424242, frames), 5)
        await asyncio.wait_for(sync_to_async(events._group_send)(424242, stored), 5)
        heard = [(await asyncio.wait_for(layer.receive(channel), 5)) for _ in range(4)]
    finally:
        loop.call_soon_threadsafe(shard._lock.release)
        await layer.group_discard(group, channel)
    assert [message["frame"] for message in heard] == [*frames, stored]
    assert [message["text"] for message in heard] == [encode_frame(frame) for frame in [*frames, stored]]
