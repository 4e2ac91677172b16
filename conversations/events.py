"""The one publisher of conversation events.

Every event goes to the conversation's channel-layer group, which WebSocket consumers and
SSE streams listen to. Durable events describe stored rows and carry the conversation
``seq``; they are sent after the transaction commits, so nobody hears of a row that is not
there yet. Transient events (``message.delta``, ``typing``, ``tool.call``...) carry no seq
and go out at once. A ``sink`` (the SSE response of the request that runs the turn, or a
list for the sync endpoint) also receives every event in order.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


def group_name(conversation_id: int) -> str:
    return f"conversation.{conversation_id}"


def event_frame(event_type: str, data: dict, seq: int | None = None) -> dict:
    """The wire shape shared by SSE and WebSocket: ``{"type", "seq", "data"}``."""
    return {"type": event_type, "seq": seq, "data": data}


def _group_send(conversation_id: int, frame: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group_name(conversation_id), {"type": "conversation.event", "frame": frame})
    except Exception:  # noqa: BLE001 - a fan-out failure must not fail the stored action
        logger.exception("could not publish event", extra={"conversation_id": conversation_id, "event": frame["type"]})


@dataclass
class Publisher:
    conversation_id: int
    sink: Callable[[dict], None] | None = None
    sent: list[dict] = field(default_factory=list)

    def emit(self, event_type: str, data: dict, *, seq: int | None = None) -> None:
        """Publishes now (transient) or after the current transaction commits (durable)."""
        frame = event_frame(event_type, data, seq)

        def deliver():
            self.sent.append(frame)
            if self.sink is not None:
                self.sink(frame)
            _group_send(self.conversation_id, frame)

        if seq is not None:
            transaction.on_commit(deliver)
        else:
            deliver()


def publish(conversation_id: int, event_type: str, data: dict, *, seq: int | None = None) -> None:
    Publisher(conversation_id).emit(event_type, data, seq=seq)
