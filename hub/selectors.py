"""The hub's reads with rules: tenant scope first; another tenant's account is not found."""

from django.db.models import QuerySet

from config.core.errors import NotFound

from .models import ChannelAccount, DeliveryAttempt, MessageStatusChange


def account_list(*, tenant) -> QuerySet[ChannelAccount]:
    """The tenant's connected accounts, newest first."""
    return ChannelAccount.objects.for_tenant(tenant).filter(is_active=True).order_by("-created_at", "-id")


def account_get(*, tenant, account_id) -> ChannelAccount:
    try:
        account_id = int(account_id)
    except (TypeError, ValueError):
        raise NotFound("Channel account not found.") from None
    account = account_list(tenant=tenant).filter(pk=account_id).first()
    if account is None:
        raise NotFound("Channel account not found.")
    return account


def message_delivery_history(*, message) -> dict:
    """The message's status changes and its delivery attempts (empty for a message that
    was never routed), two queries."""
    attempts = list(DeliveryAttempt.objects.filter(delivery__message=message).order_by("at", "id"))
    changes = list(MessageStatusChange.objects.filter(message=message).order_by("at", "id"))
    return {"attempts": attempts, "changes": changes}
