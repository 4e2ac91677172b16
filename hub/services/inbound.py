"""Inbound webhooks: a platform's signed POST with new messages and status reports.

Order of checks: a known channel (404), a signature header at all (401), a payload of the
platform's shape (400), the account it names (404), the signature over the raw body with
that account's secret, compared in constant time (401), no stale timestamp (400). Only
then is anything stored: new messages (with any statuses beside them) in one transaction;
a payload of status reports only as ``statuses.reported_statuses_apply`` (one statement a
run of the same status on PostgreSQL, no transaction needed).

The async view (``webhook_areceive``) does the checks that need no database in the event
loop, and the database work in one thread hop. Status reports are most of what platforms
post (one to three per message sent), so their account is kept per process
(``WebhookKeys``: its id and secret, ``HUB_WEBHOOK_ACCOUNT_CACHE_SECONDS``): a report is
then verified in the event loop and costs one statement. A signature that does not match
the cached secret is checked again against the stored account before the 401 (an account
reconnected with a new secret is never refused for a stale entry)."""

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audits.services import audit_record
from chat.services import turns
from config.core.errors import ApplicationError, NotFound
from conversations import services as conversation_services
from conversations.models import MAX_MESSAGE_CHARS, Message

from .. import platforms
from ..models import ChannelAccount, InboundMessage
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


@dataclass(frozen=True)
class WebhookKey:
    """What verifying and applying status reports needs of a connected account."""

    account_id: int
    secret: str


class WebhookKeys:
    """(channel, external id) -> the connected account's ``WebhookKey``, per process, for
    at most ``HUB_WEBHOOK_ACCOUNT_CACHE_SECONDS`` (0: off), bounded (oldest out first).
    A disconnect in this process forgets the entry at once; other processes keep
    accepting that account's correctly signed status reports until theirs expires, which
    moves only that account's own messages (the account's history stays after a
    disconnect anyway). Thread-safe: the event loop reads, threads write."""

    MAX_ENTRIES = 10_000

    def __init__(self, *, clock=time.monotonic):
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, WebhookKey]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def ttl() -> float:
        return float(getattr(settings, "HUB_WEBHOOK_ACCOUNT_CACHE_SECONDS", 0) or 0)

    def get(self, channel: str, external_id: str) -> WebhookKey | None:
        with self._lock:
            entry = self._entries.get((channel, external_id))
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[(channel, external_id)]
                return None
            return entry[1]

    def put(self, channel: str, external_id: str, key: WebhookKey) -> None:
        ttl = self.ttl()
        if ttl <= 0:
            return
        with self._lock:
            self._entries[(channel, external_id)] = (self.clock() + ttl, key)
            self._entries.move_to_end((channel, external_id))
            while len(self._entries) > self.MAX_ENTRIES:
                self._entries.popitem(last=False)

    def forget(self, channel: str, external_id: str) -> None:
        with self._lock:
            self._entries.pop((channel, external_id), None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


webhook_keys = WebhookKeys()


def webhook_parse(*, channel: str, body: bytes, signature: str | None) -> platforms.InboundBatch:
    """The checks that need no database, in order: a known channel (404), a signature
    header (401), a payload of the platform's shape (400). Returns what it names."""
    if channel not in INBOUND_CHANNELS:
        raise NotFound("Unknown channel.")
    if not signature:
        raise _unauthorized("The X-Hub-Signature-256 header is missing.")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApplicationError("The body is not JSON.", code="invalid_payload", status=400) from None
    return platforms.parse(channel, payload)


def _fresh(batch: platforms.InboundBatch) -> None:
    """400 ``stale_timestamp`` when anything in the payload is older than allowed."""
    now = int(timezone.now().timestamp())
    oldest = min([m.timestamp for m in batch.messages] + [s.timestamp for s in batch.statuses], default=now)
    if now - oldest > settings.HUB_WEBHOOK_MAX_AGE_SECONDS:
        raise ApplicationError(
            f"A timestamp is older than {settings.HUB_WEBHOOK_MAX_AGE_SECONDS} seconds.",
            code="stale_timestamp",
            status=400,
            details={"timestamp": oldest},
        )


def _reports(batch: platforms.InboundBatch) -> list[tuple[str, str]]:
    """(our platform id, status) of each report we know the status of, in payload order."""
    return [(s.external_id, STATUS_MAP[s.status]) for s in batch.statuses if s.status in STATUS_MAP]


def webhook_receive(*, channel: str, body: bytes, signature: str | None) -> dict:
    """Verifies and applies one inbound webhook; returns what it did
    (``{"messages": stored, "duplicates": seen before, "statuses": applied}``)."""
    batch = webhook_parse(channel=channel, body=body, signature=signature)
    return webhook_receive_parsed(channel=channel, body=body, signature=signature, batch=batch)


async def webhook_areceive(*, channel: str, body: bytes, signature: str | None) -> dict:
    """``webhook_receive`` for the async view: parsing, and for status reports of a cached
    account the signature and timestamps, in the event loop; the database in one thread
    hop (``sync_to_async``: the request's own thread under ASGI, as Django runs views)."""
    batch = webhook_parse(channel=channel, body=body, signature=signature)
    key = webhook_keys.get(channel, batch.account_external_id)
    if key is not None and not batch.messages and signature_valid(body, key.secret, signature):
        _fresh(batch)
        applied = await sync_to_async(statuses.reported_statuses_apply)(
            account_id=key.account_id, reports=_reports(batch)
        )
        return {"messages": 0, "duplicates": 0, "statuses": applied}
    return await sync_to_async(webhook_receive_parsed)(channel=channel, body=body, signature=signature, batch=batch)


def webhook_receive_parsed(*, channel: str, body: bytes, signature: str, batch: platforms.InboundBatch) -> dict:
    """The rest of ``webhook_receive`` once ``webhook_parse`` passed: the account (404),
    the signature with its secret (401), the timestamps (400), then the changes."""
    account = (
        ChannelAccount.objects.select_related("created_by__tenant", "tenant")
        .filter(channel=channel, external_id=batch.account_external_id, is_active=True)
        .first()
    )
    if account is None:
        webhook_keys.forget(channel, batch.account_external_id)
        raise NotFound("No connected account has this id.")
    secret = secret_decrypt(account.secret_encrypted)
    if not signature_valid(body, secret, signature):
        raise _unauthorized("The signature does not match the body.")
    webhook_keys.put(channel, batch.account_external_id, WebhookKey(account.pk, secret))
    _fresh(batch)

    if not batch.messages:
        return {
            "messages": 0,
            "duplicates": 0,
            "statuses": statuses.reported_statuses_apply(account_id=account.pk, reports=_reports(batch)),
        }
    stored = duplicates = 0
    with transaction.atomic():
        for item in batch.messages:
            if inbound_message_store(account=account, item=item):
                stored += 1
            else:
                duplicates += 1
        applied = statuses.reported_statuses_apply(account_id=account.pk, reports=_reports(batch))
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
