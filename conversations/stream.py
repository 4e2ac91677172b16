"""Resuming a conversation's event stream without a gap or a duplicate.

Subscribe to the conversation's group first (the channel buffers what arrives), then send
the stored messages with ``seq > after_seq`` from the database, then the buffered and live
events, dropping any stored-message event at or below the last seq already sent. SSE
(``Last-Event-ID``) and WebSocket (``?after_seq=``) both use this.
"""

import asyncio

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from .events import event_frame, group_name
from .models import Message
from .services import message_event_data, message_event_type

# Events that announce a stored message: replayed from the database, deduplicated by seq.
MESSAGE_EVENTS = {"message.created", "message.completed"}


def stored_frames(conversation_id: int, after_seq: int) -> list[dict]:
    messages = Message.objects.filter(conversation_id=conversation_id, seq__gt=after_seq).order_by("seq")
    return [
        event_frame(message_event_type(message), message_event_data(message), message.seq)
        for message in messages.iterator(chunk_size=200)
    ]


class SeqFilter:
    """Admits each stored message once, in seq order, across the replay and live phases."""

    def __init__(self, last_seq: int = 0):
        self.last_seq = last_seq

    def admit(self, frame: dict) -> bool:
        seq = frame.get("seq")
        if seq is None or frame.get("type") not in MESSAGE_EVENTS:
            return True
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True


class ConversationSubscription:
    """One listener's view of a conversation: ``open()``, then ``backlog()``, then ``next()``."""

    def __init__(self, conversation_id: int, after_seq: int | None):
        self.conversation_id = conversation_id
        self.after_seq = after_seq
        self.filter = SeqFilter(after_seq or 0)
        self.layer = get_channel_layer()
        self.channel = None

    async def open(self) -> None:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(group_name(self.conversation_id), self.channel)

    async def backlog(self) -> list[dict]:
        if self.after_seq is None:
            return []
        frames = await database_sync_to_async(stored_frames)(self.conversation_id, self.after_seq)
        return [frame for frame in frames if self.filter.admit(frame)]

    async def next(self, timeout: float) -> dict | None:
        """The next live frame, or None when ``timeout`` passes with nothing to send."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                message = await asyncio.wait_for(self.layer.receive(self.channel), remaining)
            except TimeoutError:
                return None
            frame = message.get("frame")
            if frame and self.filter.admit(frame):
                return frame

    async def close(self) -> None:
        if self.channel:
            await self.layer.group_discard(group_name(self.conversation_id), self.channel)
