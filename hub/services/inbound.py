"""Inbound webhooks: a platform's signed POST with new messages and status reports.

Order of checks: a known channel (404), a signature header at all (401), a payload of the
platform's shape (400), the account it names (404), the signature over the raw body with
that account's secret, compared in constant time (401), no stale timestamp (400). Only
then is anything stored, all in one transaction."""

import json
import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audits.services import audit_record
from chat.services import turns
from config.core.errors import ApplicationError, NotFound
from conversations import services as conversation_services
from conversations.models import MAX_MESSAGE_CHARS, Message

from .. import platforms
from ..models import ChannelAccount, Delivery, InboundMessage
from ..secrets import secret_decrypt, signature_valid
from . import bindings, statuses

logger = logging.getLogger(__name__)

INBOUND_CHANNELS = ("whatsapp", "instagram")
STATUS_MAP = {
    "sent": Message.Status.SENT,
    "delivered": Message.Status.DELIVERED,
    "read": Message.Status.READ,
    "failed": Message.Status.FAILED,
}


def _unauthorized(message: str) -> ApplicationError:
    return ApplicationError(message, code="invalid_signature", status=401)


def webhook_receive(*, channel: str, body: bytes, signature: str | None) -> dict:
    """Verifies and applies one inbound webhook; returns what it did
    (``{"messages": stored, "duplicates": seen before, "statuses": applied}``)."""
    if channel not in INBOUND_CHANNELS:
        raise NotFound("Unknown channel.")
    if not signature:
        raise _unauthorized("The X-Hub-Signature-256 header is missing.")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApplicationError("The body is not JSON.", code="invalid_payload", status=400) from None
    batch = platforms.parse(channel, payload)
    account = (
        ChannelAccount.objects.select_related("created_by__tenant", "tenant")
        .filter(channel=channel, external_id=batch.account_external_id, is_active=True)
        .first()
    )
    if account is None:
        raise NotFound("No connected account has this id.")
    if not signature_valid(body, secret_decrypt(account.secret_encrypted), signature):
        raise _unauthorized("The signature does not match the body.")
    now = int(timezone.now().timestamp())
    oldest = min([m.timestamp for m in batch.messages] + [s.timestamp for s in batch.statuses], default=now)
    if now - oldest > settings.HUB_WEBHOOK_MAX_AGE_SECONDS:
        raise ApplicationError(
            f"A timestamp is older than {settings.HUB_WEBHOOK_MAX_AGE_SECONDS} seconds.",
            code="stale_timestamp",
            status=400,
            details={"timestamp": oldest},
        )

    stored = duplicates = applied = 0
    with transaction.atomic():
        for item in batch.messages:
            if inbound_message_store(account=account, item=item):
                stored += 1
            else:
                duplicates += 1
        for report in batch.statuses:
            applied += inbound_status_apply(account=account, report=report)
    return {"messages": stored, "duplicates": duplicates, "statuses": applied}


def inbound_message_store(*, account: ChannelAccount, item: platforms.InboundText) -> bool:
    """Stores one inbound message in the contact's open conversation (opened if needed) and
    asks the agent to answer when the binding has it enabled. False when this platform id
    was stored before (platforms retry): nothing changes."""
    if InboundMessage.objects.filter(account=account, external_id=item.external_id).exists():
        return False
    try:
        with transaction.atomic():
            contact = bindings.contact_get_or_create(account=account, address=item.sender, name=item.name)
            binding, _ = bindings.binding_open(account=account, contact=contact)
            message = conversation_services.message_create(
                conversation=binding.conversation,
                role=Message.Role.USER,
                content=item.text[:MAX_MESSAGE_CHARS],
                status=Message.Status.DELIVERED,
                route=False,
            )
            InboundMessage.objects.create(account=account, external_id=item.external_id, message=message)
            audit_record(
                tenant=account.tenant,
                action="message.received",
                resource_type="message",
                resource_id=message.pk,
                details={"conversation_id": binding.conversation_id, "channel": account.channel, "seq": message.seq},
            )
            if binding.agent_enabled:
                turns.turn_reply_to(message=message, user=account.created_by)
    except IntegrityError:
        # The same platform id stored by a concurrent retry between our check and insert.
        if InboundMessage.objects.filter(account=account, external_id=item.external_id).exists():
            return False
        raise
    return True


def inbound_status_apply(*, account: ChannelAccount, report: platforms.InboundStatus) -> int:
    """Moves our message forward to the reported status; 1 when it moved. An unknown id
    or a status that would go backwards changes nothing."""
    to = STATUS_MAP.get(report.status)
    if to is None:
        return 0
    delivery = (
        Delivery.objects.filter(account=account, external_id=report.external_id).select_related("message").first()
    )
    if delivery is None:
        logger.info("status for an unknown message", extra={"external_id": report.external_id})
        return 0
    message = delivery.message
    return int(statuses.message_status_advance(message_id=message.pk, to=to, message=message))
