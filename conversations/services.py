"""Every write to conversations and messages. Events go out through conversations.events."""

from collections.abc import Iterable

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import User
from audits.services import audit_record
from config.core.errors import ApplicationError, Forbidden

from . import selectors
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
) -> Conversation:
    """A conversation owned by ``user``, who always takes part in it. Every id in
    ``participant_ids`` must be a user of the owner's tenant, else ``validation_error``
    and nothing is created."""
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
    with transaction.atomic(savepoint=False):
        conversation = Conversation.objects.create(
            tenant_id=user.tenant_id, owner=user, title=title, channel=channel, metadata=metadata or {}
        )
        conversation.participants.add(user, *others)
        audit_record(
            tenant=user.tenant,
            actor=user,
            action="conversation.created",
            resource_type="conversation",
            resource_id=conversation.pk,
            details={"title": title, "channel": channel},
        )
    return conversation


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


def message_create(
    *,
    conversation: Conversation,
    role: str,
    content: str,
    sender=None,
    tool_calls: list | None = None,
    attachments: list | None = None,
    status: str = Message.Status.DELIVERED,
    client_message_id: str | None = None,
    event: str = "message.created",
    publisher: Publisher | None = None,
) -> Message:
    """Stores a message with the next ``seq`` of its conversation.

    The seq comes from ``Conversation.last_seq``, bumped under a row lock in this
    transaction (one ``UPDATE ... RETURNING``): gapless and unique under any number of
    writers, and a rolled-back insert rolls its number back. ``event`` (``message.created``; ``message.completed`` for a
    finished assistant reply) is published after commit, carrying the seq, through
    ``publisher`` when the caller streams the turn itself.
    """
    # No savepoint when nested: nothing here is expected to fail, and a database error
    # aborts the caller's transaction anyway (callers that recover, like message_send with
    # a client_message_id, hold their own savepoint).
    with transaction.atomic(savepoint=False):
        now = timezone.now()
        seq = _next_seq(conversation_id=conversation.pk, now=now)
        conversation.last_seq, conversation.updated_at = seq, now
        message = Message.objects.create(
            tenant_id=conversation.tenant_id,
            conversation=conversation,
            seq=seq,
            role=role,
            sender=sender,
            content=content,
            tool_calls=tool_calls or [],
            attachments=attachments or [],
            status=status,
            client_message_id=client_message_id,
            created_at=now,
        )
        (publisher or Publisher(conversation.pk)).emit(event, message_data(message), seq=message.seq)
    return message


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
    *, conversation: Conversation, user, content: str, attachments: list | None = None, client_message_id=None
) -> tuple[Message, bool]:
    """A user's message into a conversation. Returns (message, created); resending the same
    ``client_message_id`` returns the stored message instead of a second one."""
    check_content(content)
    if client_message_id:
        existing = Message.objects.filter(conversation=conversation, client_message_id=client_message_id).first()
        if existing:
            return existing, False
    try:
        # A savepoint only when a duplicate client_message_id is recovered from below.
        with transaction.atomic(savepoint=bool(client_message_id)):
            message = message_create(
                conversation=conversation,
                role=Message.Role.USER,
                content=content,
                sender=user,
                attachments=attachments,
                client_message_id=client_message_id,
            )
            audit_record(
                tenant=user.tenant,
                actor=user,
                action="message.sent",
                resource_type="message",
                resource_id=message.pk,
                details={"conversation_id": conversation.pk, "seq": message.seq},
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
