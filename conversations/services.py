"""Every write to conversations and messages. Events go out through conversations.events."""

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import User
from audits.services import audit_record
from config import statements
from config.core.errors import ApplicationError, Forbidden

from . import routing, selectors
from .attachments import attachments_resolve
from .events import Publisher, publish
from .models import MAX_MESSAGE_CHARS, Conversation, Message
from .serializers import message_data


def check_content(content: str) -> str:
    if not isinstance(content, str) or not content.strip():
        raise ApplicationError(
            "The message must not be empty.", code="validation_error", details={"content": ["empty"]}
        )
    if len(content) > MAX_MESSAGE_CHARS:
        raise ApplicationError(
            f"The message is longer than {MAX_MESSAGE_CHARS} characters.",
            code="validation_error",
            details={"content": [f"at most {MAX_MESSAGE_CHARS} characters"]},
        )
    return content


def conversation_create(
    *,
    user,
    title: str = "",
    channel: str = Conversation.Channel.API,
    metadata: dict | None = None,
    participant_ids: Iterable[int] = (),
    first: Callable[[Conversation, statements.Writes | None], None] | None = None,
    own_transaction: bool = False,
) -> Conversation:
    """A conversation owned by ``user``, who always takes part in it. Every id in
    ``participant_ids`` must be a user of the owner's tenant, else ``validation_error``
    and nothing is created.

    ``first(conversation, writes)``: the conversation's first message, written with it. On
    PostgreSQL the conversation (its ``pk`` a ``Ref`` until then), its participants, its
    record and what ``first`` adds to ``writes`` (``message_send(..., writes=writes)``)
    are one statement; elsewhere ``writes`` is None and the conversation is stored
    already. ``own_transaction``: as in ``message_create``."""
    wanted = set(participant_ids) - {user.pk}
    others = list(User.objects.filter(tenant_id=user.tenant_id, pk__in=wanted)) if wanted else []
    if len(others) != len(wanted):
        unknown = sorted(wanted - {other.pk for other in others})
        raise ApplicationError(
            "Some participants are not users of your tenant.",
            code="validation_error",
            details={"participant_ids": [f"unknown user {pk}" for pk in unknown]},
        )
    # Checked above, so nothing expected fails inside: no savepoint when nested (a failure
    # rolls back the caller's transaction, or the caller's own savepoint).
    conversation = Conversation(
        tenant_id=user.tenant_id, owner=user, title=title, channel=channel, metadata=metadata or {}
    )
    participants = [user.pk, *(other.pk for other in others)]
    if statements.supported():
        # One statement: the conversation, its participants and its audit record.
        _conversation_insert_with(
            conversation, participants=participants, user=user, first=first, own_transaction=own_transaction
        )
        return conversation
    with transaction.atomic(savepoint=False):
        conversation.save(force_insert=True)
        conversation.participants.add(*participants)
        _conversation_created_record(conversation, user=user)
        if first is not None:
            first(conversation, None)
    return conversation


def _conversation_created_record(conversation: Conversation, *, user, writes=None) -> None:
    audit_record(
        tenant=user.tenant_id,
        actor=user,
        action="conversation.created",
        resource_type="conversation",
        resource_id=conversation.pk,
        details={"title": conversation.title, "channel": conversation.channel},
        writes=writes,
    )


def _conversation_insert_with(
    conversation: Conversation, *, participants: list[int], user, first=None, own_transaction: bool = False
) -> None:
    """``conversation``, its ``participants`` (user ids), its ``conversation.created``
    record and what ``first`` adds (its first message: ``last_seq`` starts at 1) in one
    statement (``config.statements``); the conversation's id is filled in."""
    qn = connection.ops.quote_name
    writes = statements.Writes()
    if first is not None:
        conversation.last_seq = 1
    row = writes.insert(conversation)
    through = Conversation.participants.through._meta
    writes.add(
        f"INSERT INTO {qn(through.db_table)} ({qn('conversation_id')}, {qn('user_id')})"
        f" SELECT {row.name}.{qn('id')}, u FROM {row.name}, unnest(CAST(%s AS bigint[])) AS u"
        " ON CONFLICT DO NOTHING",
        ["{" + ",".join(str(int(pk)) for pk in participants) + "}"],  # an array literal: ids of any size
        (),
    )
    conversation.pk = row.ref("id")

    def inserted() -> None:
        conversation.pk = conversation.pk.value
        conversation._state.adding, conversation._state.db = False, connection.alias

    writes.on_done(inserted)
    _conversation_created_record(conversation, user=user, writes=writes)
    if first is not None:
        first(conversation, writes)
    writes.execute(own_transaction=own_transaction)


def check_can_manage(*, conversation: Conversation, user, as_staff: bool = False) -> None:
    """Only the owner, or an owner/admin of the tenant, may change or delete a
    conversation. Callers have already checked that ``user`` can see it (a stranger gets
    404 from the selector), so a participant gets 403 here. ``as_staff``: the Django admin
    acts for platform staff and has checked their Django permissions already; no API path
    passes it, so staff get no more over the API than anyone of their tenant."""
    if as_staff and user.is_staff:
        return
    if conversation.owner_id != user.pk and not user.is_tenant_admin:
        raise Forbidden("Only the conversation's owner or a tenant admin may change or delete it.")


@transaction.atomic
def conversation_update(*, conversation: Conversation, user, as_staff: bool = False, **changes) -> Conversation:
    check_can_manage(conversation=conversation, user=user, as_staff=as_staff)
    allowed = {"title", "status", "metadata"}
    fields = [name for name in changes if name in allowed]
    for name in fields:
        setattr(conversation, name, changes[name])
    conversation.updated_at = timezone.now()
    conversation.save(update_fields=[*fields, "updated_at"])
    audit_record(
        tenant=conversation.tenant_id,  # the conversation's trail, also when staff act in the admin
        actor=user,
        action="conversation.updated",
        resource_type="conversation",
        resource_id=conversation.pk,
        details={"fields": sorted(fields)},
    )
    return conversation


@transaction.atomic
def conversation_participants_set(
    *, conversation: Conversation, user, participant_ids: Iterable[int], as_staff: bool = False
) -> Conversation:
    """Replaces who takes part in ``conversation``. Every id must be a user of the
    conversation's tenant, else ``validation_error`` and nothing changes; the owner always
    stays. Recorded as ``conversation.participants_changed`` (ids added and removed) on the
    conversation's trail; nothing is recorded when nothing changed."""
    check_can_manage(conversation=conversation, user=user, as_staff=as_staff)
    wanted = set(participant_ids) | {conversation.owner_id}
    found = set(User.objects.filter(tenant_id=conversation.tenant_id, pk__in=wanted).values_list("pk", flat=True))
    if found != wanted:
        raise ApplicationError(
            "Some participants are not users of the conversation's tenant.",
            code="validation_error",
            details={"participant_ids": [f"unknown user {pk}" for pk in sorted(wanted - found)]},
        )
    current = set(conversation.participants.values_list("pk", flat=True))
    added, removed = sorted(wanted - current), sorted(current - wanted)
    if added or removed:
        conversation.participants.add(*added)
        conversation.participants.remove(*removed)
        audit_record(
            tenant=conversation.tenant_id,
            actor=user,
            action="conversation.participants_changed",
            resource_type="conversation",
            resource_id=conversation.pk,
            details={"added": added, "removed": removed},
        )
    return conversation


@transaction.atomic
def conversation_delete(*, conversation: Conversation, user, as_staff: bool = False) -> None:
    check_can_manage(conversation=conversation, user=user, as_staff=as_staff)
    conversation_id, tenant_id = conversation.pk, conversation.tenant_id
    conversation.delete()
    audit_record(
        tenant=tenant_id,
        actor=user,
        action="conversation.deleted",
        resource_type="conversation",
        resource_id=conversation_id,
    )


PURGE_BATCH = 200


def conversations_purge(
    *,
    older_than: timedelta,
    tenant_id: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    batch_size: int = PURGE_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Retention: deletes the conversations without activity (``updated_at``, which every
    new message moves) for ``older_than``, with their messages and runs; all tenants, or
    one. Works in batches of ``batch_size``, each its own transaction with one
    ``conversation.purged`` record on the tenant's trail naming the ids it removed, so an
    interrupted purge keeps what it did and can simply be run again. A conversation that
    became active while the purge ran is kept. ``dry_run``: counts only, changes nothing.
    Returns ``{"cutoff", "conversations", "messages", "tenants": {tenant_id: n}, "deleted"}``;
    ``progress`` gets (done, total) after each batch."""
    cutoff = (now or timezone.now()) - older_than
    stale = Conversation.objects.filter(updated_at__lt=cutoff)
    if tenant_id is not None:
        stale = stale.filter(tenant_id=tenant_id)
    by_tenant: dict[int, list[int]] = defaultdict(list)
    for pk, owner_tenant in stale.order_by("tenant_id", "pk").values_list("pk", "tenant_id"):
        by_tenant[owner_tenant].append(pk)
    total = sum(len(ids) for ids in by_tenant.values())
    result = {
        "cutoff": cutoff,
        "conversations": total,
        "messages": Message.objects.filter(conversation__in=stale).count(),
        "tenants": {tid: len(ids) for tid, ids in by_tenant.items()},
        "deleted": 0,
    }
    if dry_run:
        return result
    done = 0
    for owner_tenant, ids in by_tenant.items():
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            with transaction.atomic():
                batch = Conversation.objects.select_for_update().filter(pk__in=chunk, updated_at__lt=cutoff)
                gone = sorted(batch.values_list("pk", flat=True))
                if gone:
                    messages = Message.objects.filter(conversation_id__in=gone).count()
                    Conversation.objects.filter(pk__in=gone).delete()
                    audit_record(
                        tenant=owner_tenant,
                        action="conversation.purged",
                        resource_type="conversation",
                        details={
                            "older_than_days": older_than.days,
                            "cutoff": cutoff.isoformat(),
                            "conversation_ids": gone,
                            "messages": messages,
                        },
                    )
                    result["deleted"] += len(gone)
            done += len(chunk)
            if progress:
                progress(done, total)
    return result


def conversation_export_recorded(*, conversation: Conversation, actor=None, via: str) -> None:
    """Records that ``actor`` (None: an operator's command) took a copy of the
    conversation out of the system (``via``: admin, command), on its tenant's trail."""
    audit_record(
        tenant=conversation.tenant_id,
        actor=actor,
        action="conversation.exported",
        resource_type="conversation",
        resource_id=conversation.pk,
        details={"via": via, "last_seq": conversation.last_seq},
    )


def message_create(
    *,
    conversation: Conversation,
    role: str,
    content: str,
    sender=None,
    tool_calls: list | None = None,
    attachments: list | None = None,
    status: str | None = None,
    client_message_id: str | None = None,
    event: str = "message.created",
    publisher: Publisher | None = None,
    route: bool = True,
    also: Callable[[Message, statements.Writes | None], None] | None = None,
    own_transaction: bool = False,
    writes: statements.Writes | None = None,
) -> Message:
    """Stores a message with the next ``seq`` of its conversation.

    The seq comes from ``Conversation.last_seq``, bumped under a row lock in this
    transaction (one ``UPDATE ... RETURNING``): gapless and unique under any number of
    writers, and a rolled-back insert rolls its number back. ``event`` (``message.created``; ``message.completed`` for a
    finished assistant reply) is published after commit, carrying the seq, through
    ``publisher`` when the caller streams the turn itself.

    In a conversation bound to an external channel (``conversations.routing``), a message
    the router takes starts ``accepted`` and is routed in this transaction (its delivery is
    handed to a worker after commit); ``route=False`` (an inbound message) or an explicit
    ``status`` skips routing. Otherwise the status is ``delivered``.

    ``also(message, writes)``: the caller's writes that go with the message (its audit
    record, the run answering it). On PostgreSQL they are steps of ``writes``, made with the
    seq bump and the message in one statement (``config.statements``): the message's
    ``pk`` and ``seq`` are ``Ref``s then, filled in before this returns. Elsewhere
    ``writes`` is None and the message is stored already: write at once.

    ``own_transaction``: the caller's transaction writes nothing else, before or after
    (``statements.Writes.execute``): the one statement may then commit on its own. Not
    when the message is routed (its routing writes follow in the transaction).

    ``writes``: the statement that creates ``conversation`` (``conversation_create`` with
    ``first``): the message is its first (seq 1), added to it, stored when the caller
    executes it (its ``pk`` and ``seq`` are filled in then).
    """
    plan = routing.route_plan(conversation=conversation, role=role) if route and status is None else None
    if status is None:
        status = Message.Status.ACCEPTED if plan else Message.Status.DELIVERED
    # No savepoint when nested: nothing here is expected to fail, and a database error
    # aborts the caller's transaction anyway (callers that recover, like message_send with
    # a client_message_id, hold their own savepoint).
    with transaction.atomic(savepoint=False):
        now = timezone.now()
        message = Message(
            tenant_id=conversation.tenant_id,
            conversation=conversation,
            role=role,
            sender=sender,
            content=content,
            tool_calls=tool_calls or [],
            attachments=attachments or [],
            status=status,
            client_message_id=client_message_id,
            created_at=now,
        )

        def stored() -> None:
            conversation.last_seq, conversation.updated_at = message.seq, now
            # First of the after-commit work of what goes with it (its audit seal request).
            (publisher or Publisher(conversation.pk)).emit(event, message_data(message), seq=message.seq)

        if writes is not None:
            if plan:
                raise ValueError("a new conversation's first message is not routed")
            _message_insert_first(message, writes=writes, stored=stored, also=also)
        elif statements.supported():
            _message_insert_with(
                message, now=now, stored=stored, also=also, own_transaction=own_transaction and plan is None
            )
        else:
            message.seq = _next_seq(conversation_id=conversation.pk, now=now)
            message.save(force_insert=True)
            stored()
            if also is not None:
                also(message, None)
        if plan:
            # After the emit: on commit, listeners hear of the message before its statuses.
            plan(message)
    return message


def _message_insert_first(message: Message, *, writes: statements.Writes, stored: Callable[[], None], also) -> None:
    """``message`` as the first of a conversation ``writes`` inserts (``last_seq`` 1), and
    the caller's ``also`` writes, as steps of ``writes``."""
    message.seq = 1
    row = writes.insert(message)
    message.pk = row.ref("id")

    def inserted() -> None:
        message.pk = message.pk.value
        message.conversation = message.conversation  # its id, filled in first (and the cached row)
        message._state.adding, message._state.db = False, connection.alias
        stored()

    writes.on_done(inserted)
    if also is not None:
        also(message, writes)


def _message_insert_with(
    message: Message, *, now, stored: Callable[[], None], also, own_transaction: bool = False
) -> None:
    """The seq bump, ``message`` and the caller's ``also`` writes in one statement: the
    ``UPDATE ... RETURNING last_seq`` of ``_next_seq`` is its first step, the message reads
    its seq from it; ``stored()`` once the message has its id and seq, before the other
    writes' callbacks. Raises ``Conversation.DoesNotExist`` when the conversation is gone
    (nothing written)."""
    qn = connection.ops.quote_name
    writes = statements.Writes()
    bump = writes.add(
        f"UPDATE {qn(Conversation._meta.db_table)} SET {qn('last_seq')} = {qn('last_seq')} + 1,"
        f" {qn('updated_at')} = %s WHERE {qn('id')} = %s RETURNING {qn('last_seq')}",
        [connection.ops.adapt_datetimefield_value(now), message.conversation_id],
        ["last_seq"],
    )
    message.seq = bump.ref("last_seq")
    row = writes.insert(message)
    message.pk = row.ref("id")

    def inserted() -> None:
        message.pk, message.seq = message.pk.value, message.seq.value
        message._state.adding, message._state.db = False, connection.alias
        stored()

    writes.on_done(inserted)  # first: the others' callbacks see the stored message
    if also is not None:
        also(message, writes)
    try:
        writes.execute(own_transaction=own_transaction)
    except statements.NothingWritten:
        raise Conversation.DoesNotExist(f"conversation {message.conversation_id} does not exist") from None


def _next_seq(*, conversation_id: int, now) -> int:
    """Bumps the conversation's ``last_seq`` (and ``updated_at``) and returns it, in one
    statement: the UPDATE takes the row lock the caller's transaction holds to its end.
    Raises ``Conversation.DoesNotExist`` when the conversation is gone."""
    qn = connection.ops.quote_name
    sql = (
        f"UPDATE {qn(Conversation._meta.db_table)} SET {qn('last_seq')} = {qn('last_seq')} + 1,"
        f" {qn('updated_at')} = %s WHERE {qn('id')} = %s RETURNING {qn('last_seq')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [connection.ops.adapt_datetimefield_value(now), conversation_id])
        row = cursor.fetchone()
    if row is None:
        raise Conversation.DoesNotExist(f"conversation {conversation_id} does not exist")
    return int(row[0])


def message_send(
    *,
    conversation: Conversation,
    user,
    content: str,
    attachments: list | None = None,
    client_message_id=None,
    also: Callable[[Message, statements.Writes | None], None] | None = None,
    own_transaction: bool = False,
    writes: statements.Writes | None = None,
) -> tuple[Message, bool]:
    """A user's message into a conversation. Returns (message, created); resending the same
    ``client_message_id`` returns the stored message instead of a second one. ``also``: the
    caller's writes that go with a new message, as in ``message_create`` (with its audit
    record: on PostgreSQL the seq bump, the message, its record and those writes are one
    statement). ``own_transaction``: as in ``message_create`` (not with a
    ``client_message_id``: its duplicate is recovered from under a savepoint). ``writes``:
    the first message of a conversation that statement creates (``conversation_create``
    with ``first``), stored when it runs; nothing to recover from then."""
    check_content(content)
    if client_message_id and writes is None:
        existing = Message.objects.filter(conversation=conversation, client_message_id=client_message_id).first()
        if existing:
            return existing, False
    # File ids in, their descriptors stored: a foreign, unknown or unfinished file is 400.
    attachments = attachments_resolve(tenant_id=conversation.tenant_id, file_ids=attachments or [])
    try:
        # A savepoint only when a duplicate client_message_id is recovered from below.
        with transaction.atomic(savepoint=bool(client_message_id) and writes is None):

            def recorded(message: Message, writes: statements.Writes | None) -> None:
                audit_record(
                    tenant=user.tenant_id,
                    actor=user,
                    action="message.sent",
                    resource_type="message",
                    resource_id=message.pk,
                    details={"conversation_id": conversation.pk, "seq": message.seq},
                    writes=writes,
                )
                if also is not None:
                    also(message, writes)

            message = message_create(
                conversation=conversation,
                role=Message.Role.USER,
                content=content,
                sender=user,
                attachments=attachments,
                client_message_id=client_message_id,
                also=recorded,
                own_transaction=own_transaction and not client_message_id,
                writes=writes,
            )
    except IntegrityError:
        if not client_message_id:
            raise
        return Message.objects.get(conversation=conversation, client_message_id=client_message_id), False
    return message, True


@transaction.atomic
def message_mark_read(*, message: Message, user) -> Message:
    """Read receipt: the message (and the caller's view of it) is read. Idempotent: only
    the first receipt changes the row, publishes ``message.status`` and is audited."""
    if message.status != Message.Status.READ:
        message.status = Message.Status.READ
        message.read_at = timezone.now()
        message.save(update_fields=["status", "read_at"])
        # No frame seq: the SSE id (what a client resumes from) only ever moves forward;
        # data.seq names the message.
        publish(message.conversation_id, "message.status", message_data(message), after_commit=True)
        audit_record(
            tenant=user.tenant,
            actor=user,
            action="message.read",
            resource_type="message",
            resource_id=message.pk,
            details={"conversation_id": message.conversation_id},
        )
    return message


def message_read(*, user, conversation_id, message_id) -> Message:
    """Read receipt from any entry point (REST, WebSocket): the message must belong to a
    conversation the user can see, else ``NotFound``."""
    conversation = selectors.conversation_get(tenant=user.tenant_id, user=user, conversation_id=conversation_id)
    message = selectors.message_get(conversation=conversation, message_id=message_id)
    return message_mark_read(message=message, user=user)


REDACTED_CONTENT = "[redacted]"


@transaction.atomic
def message_redact(*, message: Message, actor) -> Message:
    """Platform staff remove a message's content (abuse, a takedown, personal data): the
    content becomes ``[redacted]`` and its attachments go; the message keeps its ``seq``,
    role, sender and time, so the conversation's order and every client's resume point
    stay valid. Recorded as ``message.redacted`` on the conversation's tenant trail with
    what was removed (its size), never the content itself. Clients that already hold the
    message are not told (there is no event for it yet)."""
    message = Message.objects.select_for_update().get(pk=message.pk)
    removed = len(message.content)
    message.content = REDACTED_CONTENT
    message.attachments = []
    message.save(update_fields=["content", "attachments"])
    audit_record(
        tenant=message.tenant_id,
        actor=actor,
        action="message.redacted",
        resource_type="message",
        resource_id=message.pk,
        details={"conversation_id": message.conversation_id, "seq": message.seq, "chars_removed": removed},
    )
    return message
