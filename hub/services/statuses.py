"""The status lifecycle of an outbound message: ``accepted -> queued -> sent -> delivered
-> read``, or ``failed``. Only forward: a late ``delivered`` after ``read`` changes nothing.
The one exception is an operator's explicit re-queue of a failed message. Each change is
stored with its time (``MessageStatusChange``) and published as ``message.status``."""

import copy
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from conversations.events import publish
from conversations.models import Message
from conversations.serializers import message_data

from ..models import MessageStatusChange

S = Message.Status
RANK = {S.ACCEPTED: 0, S.QUEUED: 1, S.SENT: 2, S.DELIVERED: 3, S.READ: 4}
# A message may fail while it has not reached the contact yet.
FAILABLE = (S.ACCEPTED, S.QUEUED, S.SENT)


def sources_for(to: str) -> list[str]:
    """The statuses a message may move to ``to`` from."""
    if to == S.FAILED:
        return list(FAILABLE)
    return [status for status, rank in RANK.items() if rank < RANK[to]]


def status_record(*, message: Message, status: str, at: datetime | None = None) -> None:
    """Stores a status the message has just taken (its first, ``accepted``, at insert)."""
    MessageStatusChange.objects.create(message=message, status=status, at=at or timezone.now())


# No savepoint when called inside a transaction (a webhook's, a settle's): nothing catches
# its errors to carry on, so a savepoint would only cost two round trips.
@transaction.atomic(savepoint=False)
def message_status_advance(
    *, message_id: int, to: str, at: datetime | None = None, requeue: bool = False, message: Message | None = None
) -> bool:
    """Moves the message to ``to`` if that is forward from where it is (one conditional
    UPDATE, so concurrent reports cannot move it back); records and publishes the change
    after commit. ``requeue``: failed -> queued, for an operator's re-queue. ``message``:
    the caller's copy of that message (loaded with what it needed anyway), rendered for the
    event with the new status instead of being read again. Returns whether it moved."""
    at = at or timezone.now()
    sources = [S.FAILED] if requeue else sources_for(to)
    fields = {"status": to}
    if to == S.READ:
        fields["read_at"] = at
    moved = Message.objects.filter(pk=message_id, status__in=sources).update(**fields)
    if not moved:
        return False
    if message is None:
        message = Message.objects.get(pk=message_id)
    else:
        message = copy.copy(message)  # the caller's copy keeps what it had (e.g. a 202 body)
        for name, value in fields.items():
            setattr(message, name, value)
    MessageStatusChange.objects.create(message_id=message_id, status=to, at=at)
    # The contract's {message_id, status, at}, over the message as every event renders it
    # (the shape the read receipt's message.status already had).
    data = {**message_data(message), "message_id": message_id, "at": at.isoformat().replace("+00:00", "Z")}
    publish(message.conversation_id, "message.status", data, after_commit=True)
    return True
