from django.db.models import Q, QuerySet

from config.core.errors import Forbidden, NotFound
from config.rows import JoinedRead

from .models import Conversation, Message


def conversation_list(
    *, tenant, user, status: str | None = None, channel: str | None = None, search: str | None = None
) -> QuerySet[Conversation]:
    """Conversations the user owns or takes part in, within their tenant. ``user`` is the
    scope and is required: None is refused, not read as "the whole tenant"."""
    if user is None:
        raise TypeError("conversation_list needs the user whose conversations to list")
    qs = Conversation.objects.for_tenant(tenant).filter(Q(owner=user) | Q(participants=user)).distinct()
    if status:
        qs = qs.filter(status=status)
    if channel:
        qs = qs.filter(channel=channel)
    if search:
        qs = qs.filter(title__icontains=search)
    return qs.select_related("owner")


def conversation_get(*, tenant, user, conversation_id) -> Conversation:
    """The conversation if the user may see it (its owner or a participant, within their
    tenant), with its owner loaded; another tenant's or a stranger's is 404.

    One statement written once per database vendor (``config.rows.JoinedRead``), not a
    queryset: every posted message, chat turn and live send starts here, and under load
    compiling ``conversation_list(...).filter(pk=...).first()`` (a join, DISTINCT,
    select_related, ORDER BY) was a quarter of the served 202 path's Python time (py-spy;
    docs/benchmarks.md, "Fifth round"). Same rows, same 404s: a test compares it with
    ``conversation_list``."""
    try:
        conversation_id = int(conversation_id)
    except (TypeError, ValueError):
        raise NotFound("Conversation not found.") from None
    tenant_id = getattr(tenant, "pk", tenant)
    if user is None:
        raise TypeError("conversation_get needs the user whose conversation to read")
    if tenant_id is None or user.pk is None:
        raise NotFound("Conversation not found.")
    conversation = _visible(conversation_id=conversation_id, tenant_id=tenant_id, user_id=user.pk)
    if conversation is None:
        raise NotFound("Conversation not found.")
    return conversation


def _visible_where(qn) -> str:
    participants = Conversation._meta.get_field("participants")
    return (
        f"m.{qn('id')} = %s AND m.{qn('tenant_id')} = %s AND (m.{qn('owner_id')} = %s OR EXISTS ("
        f"SELECT 1 FROM {qn(participants.remote_field.through._meta.db_table)} p"
        f" WHERE p.{qn(participants.m2m_column_name())} = m.{qn('id')}"
        f" AND p.{qn(participants.m2m_reverse_name())} = %s))"
    )


# The conversation with its owner, if the user owns it or takes part in it, in their tenant.
_VISIBLE = JoinedRead(Conversation, "owner", where=_visible_where)


def _visible(*, conversation_id: int, tenant_id, user_id) -> Conversation | None:
    return _VISIBLE.one([conversation_id, tenant_id, user_id, user_id])


def conversation_for_listener(*, user, conversation_id) -> Conversation:
    """Like ``conversation_get``, for a live connection that may say more: a conversation of
    the caller's tenant that they do not take part in is ``Forbidden`` (it exists for them);
    another tenant's, or none, is ``NotFound``."""
    try:
        return conversation_get(tenant=user.tenant_id, user=user, conversation_id=conversation_id)
    except NotFound:
        if Conversation.objects.for_tenant(user.tenant_id).filter(pk=conversation_id).exists():
            raise Forbidden("You do not take part in this conversation.") from None
        raise


def message_list(*, conversation: Conversation, after_seq: int | None = None) -> QuerySet[Message]:
    qs = Message.objects.filter(conversation=conversation).select_related("sender").order_by("seq")
    if after_seq is not None:
        qs = qs.filter(seq__gt=after_seq)
    return qs


def message_get(*, conversation: Conversation, message_id) -> Message:
    """A message of this conversation; a malformed id (WebSocket input) is 404 too."""
    try:
        message_id = int(message_id)
    except (TypeError, ValueError):
        raise NotFound("Message not found.") from None
    message = Message.objects.filter(conversation=conversation, pk=message_id).first()
    if message is None:
        raise NotFound("Message not found.")
    return message


def conversation_export_list(*, tenant, status: str | None = None) -> QuerySet[Conversation]:
    """All of a tenant's conversations, oldest first, for an operator's export (no user
    scope: the operator exports the tenant)."""
    qs = Conversation.objects.for_tenant(tenant).order_by("pk").prefetch_related("participants")
    if status:
        qs = qs.filter(status=status)
    return qs


def message_export_list(*, conversation: Conversation) -> QuerySet[Message]:
    return Message.objects.filter(conversation=conversation).order_by("seq")
