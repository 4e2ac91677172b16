"""The status lifecycle of an outbound message: ``accepted -> queued -> sent -> delivered
-> read``, or ``failed``. Only forward: a late ``delivered`` after ``read`` changes nothing.
The one exception is an operator's explicit re-queue of a failed message. Each change is
stored with its time (``MessageStatusChange``) and published as ``message.status``.

On PostgreSQL a move is **one statement**: the conditional ``UPDATE … RETURNING`` of the
message(s) and the ``INSERT`` of their status rows in one data-modifying ``WITH``, atomic
on its own, so outside a transaction (the after-commit ``queued`` move, a status webhook)
it needs no BEGIN/COMMIT either (it was BEGIN, UPDATE, INSERT, COMMIT: four round trips).
The returned rows are the moved messages as stored, which the event renders. Elsewhere
(SQLite, the embedded default) the same moves go through the ORM, UPDATE then INSERT in
one transaction."""

import copy
from collections.abc import Sequence
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from conversations.events import publish
from conversations.models import Message
from conversations.serializers import message_data

from ..models import ChannelAccount, Delivery, MessageStatusChange

S = Message.Status
RANK = {S.ACCEPTED: 0, S.QUEUED: 1, S.SENT: 2, S.DELIVERED: 3, S.READ: 4}
# A message may fail while it has not reached the contact yet.
FAILABLE = (S.ACCEPTED, S.QUEUED, S.SENT)


def sources_for(to: str) -> list[str]:
    """The statuses a message may move to ``to`` from."""
    if to == S.FAILED:
        return list(FAILABLE)
    return [status for status, rank in RANK.items() if rank < RANK[to]]


def row_insert_with_status(*, row: Delivery, status: str, at: datetime) -> None:
    """Inserts the unsaved ``row`` (a message's delivery) and its message's first status
    row (``status`` at ``at``); ``row.pk`` is set. One statement on PostgreSQL (the row's
    INSERT … RETURNING and the status row's INSERT in one ``WITH``), built from the model's
    fields as the ORM's own INSERT is (``pre_save``, ``get_db_prep_save``), so it follows
    the model; two ORM inserts elsewhere."""
    if not _one_statement():
        row.save(force_insert=True)
        MessageStatusChange.objects.create(message_id=row.message_id, status=status, at=at)
        return
    model = type(row)
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    values = [f.get_db_prep_save(f.pre_save(row, add=True), connection) for f in fields]
    sql = (
        f"WITH inserted AS (INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING {quote(model._meta.pk.column)}, message_id), "
        f"recorded AS (INSERT INTO {quote(MessageStatusChange._meta.db_table)} (message_id, status, at) "
        "SELECT message_id, %s, %s FROM inserted) "
        "SELECT * FROM inserted"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, status, at])
        row.pk = cursor.fetchone()[0]
    row._state.adding, row._state.db = False, connection.alias


def _one_statement() -> bool:
    return connection.vendor == "postgresql"


def _move_sql(*, which: str, read: bool) -> str:
    """The one statement of a move. Parameters: the new status [and read_at], those of
    ``which`` (the SQL condition naming the messages), the sources, and the status row's
    status and time."""
    message, change = Message._meta.db_table, MessageStatusChange._meta.db_table
    read_at = ", read_at = %s" if read else ""
    return (
        f"WITH moved AS (UPDATE {message} SET status = %s{read_at} "
        f"WHERE {which} AND status = ANY(%s) RETURNING *), "
        f"recorded AS (INSERT INTO {change} (message_id, status, at) SELECT id, %s, %s FROM moved) "
        "SELECT * FROM moved ORDER BY id"
    )


def _moved(*, which: str, which_params: list, to: str, at: datetime, sources: list[str]) -> list[Message]:
    read = to == S.READ
    params = [to, *([at] if read else []), *which_params, list(sources), to, at]
    # raw(): the model's converters apply (jsonb, datetimes), as for any queryset.
    return list(Message.objects.raw(_move_sql(which=which, read=read), params))


def _published(message: Message, *, to: str, at: datetime) -> None:
    # The contract's {message_id, status, at}, over the message as every event renders it
    # (the shape the read receipt's message.status already had). After commit: at once in
    # autocommit, else when the caller's transaction commits.
    data = {**message_data(message), "message_id": message.pk, "at": at.isoformat().replace("+00:00", "Z")}
    publish(message.conversation_id, "message.status", data, after_commit=True)


def message_status_advance(
    *, message_id: int, to: str, at: datetime | None = None, requeue: bool = False, message: Message | None = None
) -> bool:
    """Moves the message to ``to`` if that is forward from where it is (one conditional
    UPDATE, so concurrent reports cannot move it back); records and publishes the change
    after commit. ``requeue``: failed -> queued, for an operator's re-queue. ``message``:
    the caller's copy of that message (the ORM path renders it for the event instead of
    reading it again; it is never changed). Returns whether it moved."""
    at = at or timezone.now()
    sources = [S.FAILED] if requeue else sources_for(to)
    if _one_statement():
        moved = _moved(which="id = %s", which_params=[message_id], to=to, at=at, sources=sources)
        for row in moved:
            _published(row, to=to, at=at)
        return bool(moved)
    return _advance_orm(message_id=message_id, to=to, at=at, sources=sources, message=message)


def messages_queued(*, messages: Sequence[Message], at: datetime | None = None) -> int:
    """``message_status_advance(to=queued)`` for several messages at once (a batch of
    deliveries handed over together; each the caller's copy, never changed): on PostgreSQL
    one statement for all of them, then each change published; elsewhere one move each.
    Returns how many moved."""
    at = at or timezone.now()
    sources = sources_for(S.QUEUED)
    if not _one_statement():
        return sum(_advance_orm(message_id=m.pk, to=S.QUEUED, at=at, sources=sources, message=m) for m in messages)
    ids = [message.pk for message in messages]
    moved = _moved(which="id = ANY(%s)", which_params=[ids], to=S.QUEUED, at=at, sources=sources)
    for row in moved:
        _published(row, to=S.QUEUED, at=at)
    return len(moved)


# No savepoint when called inside a transaction (a webhook's, a settle's): nothing catches
# its errors to carry on, so a savepoint would only cost two round trips.
@transaction.atomic(savepoint=False)
def _advance_orm(*, message_id: int, to: str, at: datetime, sources: list[str], message: Message | None) -> bool:
    fields = {"status": to}
    if to == S.READ:
        fields["read_at"] = at
    if not Message.objects.filter(pk=message_id, status__in=sources).update(**fields):
        return False
    if message is None:
        message = Message.objects.get(pk=message_id)
    else:
        message = copy.copy(message)  # the caller's copy keeps what it had (e.g. a 202 body)
        for name, value in fields.items():
            setattr(message, name, value)
    MessageStatusChange.objects.create(message_id=message_id, status=to, at=at)
    _published(message, to=to, at=at)
    return True


def reported_statuses_apply(*, account_id: int, reports: Sequence[tuple[str, str]], at: datetime | None = None) -> int:
    """A platform's status reports for one account, ``(our platform id, status)`` in the
    order the platform sent them: each message moves forward only, an unknown id, a
    backward move or a disconnected account (a web process may still hold its key for
    ``HUB_WEBHOOK_ACCOUNT_CACHE_SECONDS``) changes nothing. Consecutive reports of the same status are one
    statement on PostgreSQL (the messages found through their deliveries' platform ids,
    moved and recorded together), so a webhook carrying a batch of ``delivered`` reports
    is one round trip, with no transaction around it (each statement is atomic; a crash
    between two leaves the earlier moves, which a platform's retry finds done). Returns how
    many moves were made."""
    at = at or timezone.now()
    runs: list[tuple[str, list[str]]] = []
    for external_id, to in reports:
        if runs and runs[-1][0] == to:
            runs[-1][1].append(external_id)
        else:
            runs.append((to, [external_id]))
    applied = 0
    for to, external_ids in runs:
        if _one_statement():
            which = (
                f"id IN (SELECT d.message_id FROM {Delivery._meta.db_table} d"
                f" JOIN {ChannelAccount._meta.db_table} a ON a.id = d.account_id"
                " WHERE d.account_id = %s AND a.is_active AND d.external_id = ANY(%s))"
            )
            moved = _moved(which=which, which_params=[account_id, external_ids], to=to, at=at, sources=sources_for(to))
            for row in moved:
                _published(row, to=to, at=at)
            applied += len(moved)
        else:
            for delivery in Delivery.objects.filter(
                account_id=account_id, account__is_active=True, external_id__in=external_ids
            ).select_related("message"):
                applied += _advance_orm(
                    message_id=delivery.message_id, to=to, at=at, sources=sources_for(to), message=delivery.message
                )
    return applied
