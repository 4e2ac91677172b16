"""The one publisher of conversation events.

Every event goes to the conversation's channel-layer group, which WebSocket consumers and
SSE streams listen to. Durable events describe stored rows and carry the conversation
``seq``; they are sent after the transaction commits, so nobody hears of a row that is not
there yet. Transient events (``message.delta``, ``typing``, ``tool.call``...) carry no seq
and go out at once. A ``sink`` (the SSE response of the request that runs the turn, or a
list for the sync endpoint) also receives every event in order.
"""

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.db import transaction

logger = logging.getLogger(__name__)


def group_name(conversation_id: int) -> str:
    return f"conversation.{conversation_id}"


def event_frame(event_type: str, data: dict, seq: int | None = None) -> dict:
    """The wire shape shared by SSE and WebSocket: ``{"type", "seq", "data"}``."""
    return {"type": event_type, "seq": seq, "data": data}


def encode_frame(frame: dict) -> str:
    """The WebSocket text of a frame, exactly what ``AsyncJsonWebsocketConsumer.send_json``
    would send. Encoded once per event by the publisher, so 500 sockets send one string
    instead of encoding the same frame 500 times."""
    return json.dumps(frame)


def event_message(frame: dict) -> dict:
    """The channel-layer message of one event: the frame (SSE, the seq filter) and its
    encoded text (WebSocket consumers send it as is)."""
    return {"type": "conversation.event", "frame": frame, "text": encode_frame(frame)}


_publisher_loop: tuple[int, asyncio.AbstractEventLoop] | None = None
_publisher_lock = threading.Lock()


def _publisher_event_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process, in a daemon thread, for publishing from sync code.

    ``async_to_sync`` outside an ASGI request makes a new loop per call, and channels-redis
    keeps its connections per loop: every event would pay a new Redis connection (about
    4 ms; a streamed answer sends dozens). A process-wide loop keeps them. Recreated after
    a fork (Celery's prefork children) since threads do not survive it.
    """
    global _publisher_loop
    with _publisher_lock:
        if _publisher_loop is None or _publisher_loop[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="event-publisher", daemon=True).start()
            _publisher_loop = (os.getpid(), loop)
        return _publisher_loop[1]


def _group_send(conversation_id: int, frame: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = event_message(frame)
    try:
        if isinstance(layer, InMemoryChannelLayer):
            # Its queues belong to the loop of the one process's consumers: publish there.
            async_to_sync(layer.group_send)(group_name(conversation_id), message)
        else:
            future = asyncio.run_coroutine_threadsafe(
                _publish(layer, conversation_id, [message]), _publisher_event_loop()
            )
            future.result(timeout=10)
    except Exception:  # noqa: BLE001 - a fan-out failure must not fail the stored action
        logger.exception("could not publish event", extra={"conversation_id": conversation_id, "event": frame["type"]})


@dataclass
class Publisher:
    conversation_id: int
    sink: Callable[[dict], None] | None = None

    def emit(self, event_type: str, data: dict, *, seq: int | None = None, after_commit: bool | None = None) -> None:
        """Publishes now (transient) or after the current transaction commits (a stored
        message, ``seq`` given; or any event about a row, ``after_commit=True``)."""
        frame = event_frame(event_type, data, seq)

        def deliver():
            if self.sink is not None:
                self.sink(frame)
            _group_send(self.conversation_id, frame)

        if after_commit or (after_commit is None and seq is not None):
            transaction.on_commit(deliver)
        else:
            deliver()


def publish(
    conversation_id: int, event_type: str, data: dict, *, seq: int | None = None, after_commit: bool | None = None
) -> None:
    Publisher(conversation_id).emit(event_type, data, seq=seq, after_commit=after_commit)


async def _publish(layer, conversation_id: int, messages: list[dict]) -> None:
    """Sends ``messages`` (``event_message``) to the conversation's group in order, in one
    coroutine.

    On the pub/sub layer: one pipeline of ``PUBLISH`` commands on the layer's own Redis
    client for the group's channel (what ``group_send`` sends, byte for byte), without
    channels-redis' per-shard lock. That lock makes every ``group_send`` of the process
    wait for the one before it to come back from Redis: under load the request threads of
    a chat turn spent most of their time queued there (docs/benchmarks.md, "Seventh
    round"). Order within a call is the pipeline's; calls from one thread are in order
    because each waits for its result.

    On the core Redis layer the group is looked up once first: a group nobody listens to
    (an API client chatting without a socket open) costs one EXISTS instead of two
    commands per event; otherwise each frame is a plain ``group_send``."""
    group = group_name(conversation_id)
    if isinstance(layer, RedisPubSubChannelLayer):
        loop_layer = layer._get_layer()  # noqa: SLF001 - this loop's layer, as group_send takes it
        channel = loop_layer._get_group_channel_name(group)  # noqa: SLF001
        shard = loop_layer._get_shard(channel)  # noqa: SLF001
        shard._ensure_redis()  # noqa: SLF001
        client = shard._redis  # noqa: SLF001
        payloads = [layer.serialize(message) for message in messages]
        if len(payloads) == 1:
            await client.publish(channel, payloads[0])
            return
        async with client.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.publish(channel, payload)
            await pipe.execute()
        return
    group_key = getattr(layer, "_group_key", None)
    if len(messages) > 1 and group_key is not None and hasattr(layer, "consistent_hash"):
        connection = layer.connection(layer.consistent_hash(group))
        if not await connection.exists(group_key(group)):
            return
    for message in messages:
        await layer.group_send(group, message)


def group_send_many(conversation_id: int, frames: list[dict]) -> None:
    """``_group_send`` for several frames at once (one hand-over to the publisher loop);
    failures are logged, never raised."""
    layer = get_channel_layer()
    if layer is None or not frames:
        return
    try:
        if isinstance(layer, InMemoryChannelLayer):
            for frame in frames:
                async_to_sync(layer.group_send)(group_name(conversation_id), event_message(frame))
        else:
            future = asyncio.run_coroutine_threadsafe(
                _publish(layer, conversation_id, [event_message(frame) for frame in frames]), _publisher_event_loop()
            )
            future.result(timeout=10)
    except Exception:  # noqa: BLE001 - a fan-out failure must not fail the stored action
        logger.exception("could not publish events", extra={"conversation_id": conversation_id, "events": len(frames)})


@dataclass
class BatchingPublisher(Publisher):
    """A ``Publisher`` whose group sends wait for ``flush()`` and then go out together
    (``group_send_many``), in the order they were emitted; the ``sink`` still gets each
    event at once, and events about rows still wait for their commit. For a turn that
    runs in a few milliseconds in this process (the local agent), where one send per event
    would cost more than the turn itself."""

    held: list[dict] = field(default_factory=list)

    def emit(self, event_type: str, data: dict, *, seq: int | None = None, after_commit: bool | None = None) -> None:
        frame = event_frame(event_type, data, seq)

        def deliver():
            if self.sink is not None:
                self.sink(frame)
            self.held.append(frame)

        if after_commit or (after_commit is None and seq is not None):
            transaction.on_commit(deliver)
        else:
            deliver()

    def flush(self) -> None:
        frames, self.held = self.held, []
        group_send_many(self.conversation_id, frames)
