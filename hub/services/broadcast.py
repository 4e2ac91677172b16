"""One message to several contacts on several channels: each target's conversation is
opened or reused and gets its own message, routed and tracked on its own."""

from dataclasses import dataclass

from django.db import transaction

from config.core.errors import Forbidden, NotFound
from conversations import services as conversation_services
from conversations.attachments import attachments_resolve
from conversations.models import Message

from .. import selectors
from . import bindings

MAX_TARGETS = 100


@dataclass(frozen=True)
class BroadcastItem:
    channel_account_id: int
    address: str
    conversation_id: int
    message: Message


@transaction.atomic
def message_broadcast(
    *, user, content: str, targets: list[dict], attachments: list | None = None
) -> list[BroadcastItem]:
    """All or nothing: every account must be the caller's tenant's (else 404 naming it)
    and every attachment a ready file of the tenant (else 400 ``invalid_attachment``, as on
    the 202 path) before anything is stored. Each target's message carries the same
    attachments. Tenant owners and admins only."""
    if not user.is_tenant_admin:
        raise Forbidden("Only the tenant's owners and admins may broadcast.")
    conversation_services.check_content(content)
    attachments = list(attachments or [])
    attachments_resolve(tenant_id=user.tenant_id, file_ids=attachments)  # checked once, up front
    accounts = {}
    for target in targets:
        account_id = target["channel_account_id"]
        if account_id not in accounts:
            try:
                accounts[account_id] = selectors.account_get(tenant=user.tenant_id, account_id=account_id)
            except NotFound:
                raise NotFound("Channel account not found.", details={"channel_account_id": account_id}) from None
    items = []
    for target in targets:
        account = accounts[target["channel_account_id"]]
        contact = bindings.contact_get_or_create(account=account, address=target["address"])
        binding, _ = bindings.binding_open(account=account, contact=contact, owner=user)
        message, _ = conversation_services.message_send(
            conversation=binding.conversation, user=user, content=content, attachments=attachments
        )
        items.append(BroadcastItem(account.pk, contact.address, binding.conversation_id, message))
    return items
