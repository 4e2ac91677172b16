"""Resuming a conversation's event stream without a gap or a duplicate.

Subscribe to the conversation's group first (the channel buffers what arrives), then send
the stored messages with ``seq > after_seq`` from the database, then the buffered and live
events, dropping any stored-message event at or below the last seq already sent. Events
published by different processes may arrive out of seq order: a live message whose seq
skips ahead brings the ones in between from the database first, so nothing is lost. SSE
(``Last-Event-ID``) and WebSocket (``?after_seq=``) both use this. A listener without a
resume point starts at the conversation's current ``last_seq``, read once at connect: live
events only, and a live event costs it a send, not a query. The backlog is read only for a
listener that asked for it, a page (``BACKLOG_PAGE``) per query.

Group membership: joining and leaving go through a per-event-loop limit of concurrent
channel-layer calls (``REALTIME_GROUP_OP_CONCURRENCY``) below the Redis pool size, so 1,000
sockets closing at once queue for connections instead of failing with "Too many
connections" and staying in the group; a failed leave is retried once. Members are
renewed by live listeners (``renew()``); one whose socket died without leaving is dropped
by the layer ``group_expiry`` seconds after its last renewal.
"""

import asyncio
import logging
import weakref

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from config.api.fields import MAX_ID

from .events import event_frame, group_name
from .models import Conversation, Message
from .serializers import message_data

logger = logging.getLogger(__name__)

# Events that announce a stored message: replayed from the database, deduplicated by seq.
MESSAGE_EVENTS = {"message.created", "message.completed"}
# Stored messages read per backlog query.
BACKLOG_PAGE = 500

_group_op_slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()


def group_op_slots() -> asyncio.Semaphore:
    """The running loop's limit of concurrent group_add / group_discard calls."""
    loop = asyncio.get_running_loop()
    slots = _group_op_slots.get(loop)
    if slots is None:
        slots = _group_op_slots[loop] = asyncio.Semaphore(settings.REALTIME_GROUP_OP_CONCURRENCY)
    return slots


def message_event_type(message: Message) -> str:
    """The durable event that announces a stored message, when it is replayed."""
    return "message.completed" if message.role == Message.Role.ASSISTANT else "message.created"


def stored_frames(
    conversation_id: int, after_seq: int, upto_seq: int | None = None, limit: int | None = None
) -> list[dict]:
    """The stored messages after ``after_seq`` (up to ``upto_seq``, at most ``limit``) as
    frames, in seq order: one query."""
    messages = Message.objects.filter(conversation_id=conversation_id, seq__gt=after_seq).order_by("seq")
    if upto_seq is not None:
        messages = messages.filter(seq__lte=upto_seq)
    if limit is not None:
        messages = messages[:limit]
    return [
        event_frame(message_event_type(message), message_data(message), message.seq)
        for message in messages.iterator(chunk_size=200)
    ]


class SeqFilter:
    """Admits each stored message once, in seq order, across the replay and live phases."""

    def __init__(self, conversation_id: int, last_seq: int = 0):
        self.conversation_id = conversation_id
        self.last_seq = last_seq

    def admit(self, frame: dict) -> bool:
        seq = frame.get("seq")
        if seq is None or frame.get("type") not in MESSAGE_EVENTS:
            return True
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    async def admit_live(self, frame: dict) -> list[dict]:
        """The frames to send for one live event: none (already sent), the event, or the
        stored messages it skipped ahead of followed by the event. A seq is only taken
        after every lower one committed (row lock), so the ones in between are stored."""
        seq = frame.get("seq")
        if seq is None or frame.get("type") not in MESSAGE_EVENTS or seq <= self.last_seq:
            return [frame] if self.admit(frame) else []
        missing = []
        if seq > self.last_seq + 1:
            missing = await database_sync_to_async(stored_frames)(self.conversation_id, self.last_seq, seq - 1)
        return [f for f in [*missing, frame] if self.admit(f)]


def parse_resume_point(raw: str | None) -> int | None:
    """A listener's resume point (SSE ``Last-Event-ID`` / ``?after_seq=``, WebSocket
    ``?after_seq=``): None when absent (live events only); raises ValueError unless it is a
    whole number >= 0."""
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit():
        raise ValueError(raw)
    value = int(raw)
    if value > MAX_ID:  # past bigint it names no message (SQLite: OverflowError)
        raise ValueError(raw)
    return value


def current_last_seq(conversation_id: int) -> int:
    return Conversation.objects.filter(pk=conversation_id).values_list("last_seq", flat=True).first() or 0


class ConversationSubscription:
    """One listener's view of a conversation: ``open()``, then ``backlog_pages()``, then the live
    frames: ``next()`` reads them from the subscription's own channel (SSE), ``admit_live()``
    filters those a consumer receives on its channel (WebSocket). ``close()`` unsubscribes.

    Without a resume point the listener starts at the conversation's ``last_seq`` read
    right after subscribing: live events only, none missed, no history replayed."""

    def __init__(self, conversation_id: int, after_seq: int | None, channel: str | None = None):
        self.conversation_id = conversation_id
        self.after_seq = after_seq
        self.filter = SeqFilter(conversation_id, after_seq or 0)
        self.layer = get_channel_layer()
        self.channel = channel
        self.subscribed = False
        self.renewed_at = float("-inf")
        self.reading: asyncio.Future | None = None  # next()'s pending read of the channel

    async def open(self) -> None:
        if self.channel is None:
            self.channel = await self.layer.new_channel()
        self.subscribed = True  # before the await: a cancelled group_add is undone too
        async with group_op_slots():
            await self.layer.group_add(group_name(self.conversation_id), self.channel)
        self.renewed_at = asyncio.get_running_loop().time()
        if self.after_seq is None:
            # After group_add: any message stored later reaches us as a live event.
            self.filter.last_seq = await database_sync_to_async(current_last_seq)(self.conversation_id)

    async def admit_live(self, frame: dict) -> list[dict]:
        return await self.filter.admit_live(frame)

    async def renew(self) -> None:
        """Renews the group membership (its expiry starts again)."""
        if self.subscribed:
            async with group_op_slots():
                await self.layer.group_add(group_name(self.conversation_id), self.channel)
            self.renewed_at = asyncio.get_running_loop().time()

    async def backlog_pages(self):
        """The stored messages after the resume point, page by page (one query each); nothing
        without a resume point."""
        if self.after_seq is None:
            return
        while True:
            frames = await database_sync_to_async(stored_frames)(
                self.conversation_id, self.filter.last_seq, limit=BACKLOG_PAGE
            )
            admitted = [frame for frame in frames if self.filter.admit(frame)]
            if admitted:
                yield admitted
            if len(frames) < BACKLOG_PAGE:
                return

    async def next(self, timeout: float) -> list[dict]:
        """The next live frames to send, or [] when ``timeout`` passes with nothing.

        The read of the channel is kept across calls, not cancelled at each timeout: the
        pub/sub layer treats a cancelled read as the end of the channel (it unsubscribes
        it), and a read cancelled as a message arrives could lose it."""
        loop = asyncio.get_running_loop()
        if loop.time() - self.renewed_at >= settings.REALTIME_GROUP_EXPIRY_SECONDS / 3:
            await self.renew()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            if self.reading is None:
                self.reading = asyncio.ensure_future(self.layer.receive(self.channel))
            done, _ = await asyncio.wait({self.reading}, timeout=remaining)
            if not done:
                return []
            reading, self.reading = self.reading, None
            message = reading.result()
            frames = await self.filter.admit_live(message["frame"]) if message.get("frame") else []
            if frames:
                return frames

    async def close(self) -> None:
        """Unsubscribes; safe to call more than once."""
        if self.reading is not None:
            self.reading.cancel()
            self.reading = None
        if self.subscribed:
            self.subscribed = False
            for attempt in (1, 2):
                try:
                    async with group_op_slots():
                        await self.layer.group_discard(group_name(self.conversation_id), self.channel)
                    return
                except Exception:  # noqa: BLE001 - the layer is down; the membership expires on its own
                    if attempt == 2:
                        logger.warning(
                            "could not leave the conversation group", extra={"conversation_id": self.conversation_id}
                        )
