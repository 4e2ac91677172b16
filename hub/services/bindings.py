"""Contacts and the conversations bound to them: one open conversation per contact (per
account and address), created on first contact from either side."""

from django.db import transaction

from config.core.errors import Conflict, Forbidden
from conversations import services as conversation_services
from conversations.models import Conversation

from .. import selectors
from ..models import ChannelAccount, Contact, ConversationBinding


def contact_get_or_create(*, account: ChannelAccount, address: str, name: str = "") -> Contact:
    contact, created = Contact.objects.get_or_create(
        account=account, address=address, defaults={"tenant_id": account.tenant_id, "name": name[:200]}
    )
    if not created and name and not contact.name:
        contact.name = name[:200]
        contact.save(update_fields=["name"])
    return contact


@transaction.atomic
def binding_open(*, account: ChannelAccount, contact: Contact, owner=None) -> tuple[ConversationBinding, bool]:
    """The contact's open conversation, or a new one (owned by ``owner``, else the user who
    connected the account). The contact's row lock serialises two first messages; a
    binding whose conversation was closed or archived is closed here. (binding, created)."""
    Contact.objects.select_for_update().filter(pk=contact.pk).first()
    binding = ConversationBinding.objects.select_related("conversation").filter(contact=contact, is_open=True).first()
    if binding is not None:
        if binding.conversation.status == Conversation.Status.OPEN:
            return binding, False
        ConversationBinding.objects.filter(pk=binding.pk).update(is_open=False)
    owner = owner or account.created_by
    conversation = conversation_services.conversation_create(
        user=owner, title=contact.name or contact.address, channel=account.channel
    )
    binding = ConversationBinding.objects.create(
        tenant_id=account.tenant_id,
        conversation=conversation,
        account=account,
        contact=contact,
        agent_enabled=account.agent_enabled,
    )
    return binding, True


def binding_create(*, user, account_id: int, address: str, name: str = "") -> ConversationBinding:
    """A conversation bound to a contact, opened by a tenant owner/admin: 404 for an account
    not of the caller's tenant (or disconnected), 409 ``conversation_exists`` (with its id)
    when the contact has an open one."""
    if not user.is_tenant_admin:
        raise Forbidden("Only the tenant's owners and admins may open channel conversations.")
    account = selectors.account_get(tenant=user.tenant_id, account_id=account_id)
    with transaction.atomic():
        contact = contact_get_or_create(account=account, address=address, name=name)
        binding, created = binding_open(account=account, contact=contact, owner=user)
        if not created:
            raise Conflict(
                "This contact already has an open conversation on this account.",
                code="conversation_exists",
                details={"conversation_id": binding.conversation_id},
            )
    return binding
