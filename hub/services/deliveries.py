"""Outbound deliveries: routing a stored message of a bound conversation, handing it to a
worker after commit, and executing it on the worker with the same claim/lease discipline
as agent runs (``chat.services.runs``): a delivery in progress is held by one task id; a
redelivery of that task (its worker died) or anyone after the lease lapsed takes it over,
recording the lost attempt; a delivery already sent is never sent again."""

import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from audits.services import audit_record
from config.core import background
from config.db import releasing_connection
from config.rows import JoinedRead
from conversations.models import Conversation, Message
from conversations.serializers import message_data

from .. import queue
from ..connectors import Outbound, PermanentError, TransientError, connector_for
from ..models import ConversationBinding, Delivery, DeliveryAttempt
from ..secrets import secret_decrypt
from . import statuses

logger = logging.getLogger(__name__)

State = Delivery.State
EXTERNAL_ID_PREFIX = {"whatsapp": "wamid.", "instagram": "mid.", "webhook": "hub."}


# ---------------------------------------------------------------- routing (request side)

# A conversation's binding with its account and contact, in a statement written once
# (config/rows.py): compiling the queryset on every routed message was a tenth of the hub
# acceptance's Python time (docs/benchmarks.md, "Sixth round"). One binding per
# conversation (a one-to-one key).
_BINDING = JoinedRead(ConversationBinding, ("account", "contact"), where=lambda qn: f"m.{qn('conversation_id')} = %s")


def message_route_plan(*, conversation: Conversation, role: str):
    """``conversations.routing``'s router: how a message of ``role`` in this conversation
    goes out, or None. The tenant's people's messages go to the contact; the agent's reply
    goes only when the binding has ``agent_enabled``; tool and system messages stay."""
    if role not in (Message.Role.USER, Message.Role.ASSISTANT):
        return None
    binding = _BINDING.one([conversation.pk])
    if binding is None or (role == Message.Role.ASSISTANT and not binding.agent_enabled):
        return None
    return lambda message: delivery_create(message=message, binding=binding)


def delivery_create(*, message: Message, binding: ConversationBinding) -> Delivery:
    """The delivery of a message just stored ``accepted`` (in its transaction), with the
    message's ``accepted`` status row; handed to a worker after commit. On PostgreSQL the
    two rows are one statement (``statuses.row_insert_with_status``): the request's
    transaction pays one round trip for the hub's rows, not two."""
    delivery = Delivery(
        tenant_id=message.tenant_id,
        message=message,
        account=binding.account,
        contact=binding.contact,
        external_id=EXTERNAL_ID_PREFIX[binding.account.channel] + uuid.uuid4().hex,
        pending_since=message.created_at,
    )
    statuses.row_insert_with_status(row=delivery, status=Message.Status.ACCEPTED, at=message.created_at)
    delivery_id = delivery.pk
    transaction.on_commit(lambda: _enqueue_after_commit(delivery_id, message))
    return delivery


def _enqueue_after_commit(delivery_id: int, message: Message) -> None:
    """The committed delivery's hand-over: by the process's background batcher on the real
    stack (the request answers without waiting for the ``queued`` status and the publish;
    under load one statement and one publish serve many requests), in this thread when
    Celery runs tasks eagerly (tests, embedded mode: callers expect the delivery done). A
    process killed before the batcher ran leaves the delivery pending: the stale-pending
    sweep sends it (``deliveries_sweep``)."""
    if queue.in_background():
        _enqueue_batcher.submit((delivery_id, message))
    else:
        deliveries_enqueue([(delivery_id, message)])


def deliveries_enqueue(items: list[tuple[int, Message]]) -> bool:
    """After commit, for (delivery id, its message just stored) pairs: the messages
    ``queued`` (on PostgreSQL one statement for the batch) and the deliveries to the broker
    in one publish. Never raises: when the broker refuses, every delivery of the batch is
    marked and the sweep relays them. True when sent."""
    delivery_ids = [delivery_id for delivery_id, _ in items]
    try:
        statuses.messages_queued(messages=[message for _, message in items])
        queue.delivery_send_many(delivery_ids)
    except Exception:  # noqa: BLE001 - the messages and their deliveries are stored: the sweep sends them
        logger.warning(
            "could not enqueue deliveries; the sweep will", exc_info=True, extra={"deliveries": delivery_ids}
        )
        try:
            Delivery.objects.filter(pk__in=delivery_ids, state=State.PENDING).update(enqueue_failed_at=timezone.now())
        except Exception:  # noqa: BLE001
            logger.warning("could not mark deliveries unsent", extra={"deliveries": delivery_ids})
        return False
    return True


_enqueue_batcher = background.Batcher(releasing_connection(deliveries_enqueue), name="delivery-hand-over")


# ---------------------------------------------------------------- executing (worker side)


class Outcome(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    RETRY_LATER = "retry_later"
    NOT_OURS = "not_ours"  # settled already, or held by another live execution


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    delivery: Delivery
    countdown: float | None = None
    error: str = ""


def retry_countdown(attempts: int) -> float:
    """Exponential backoff with jitter: base * 2^(attempts-1), times a random factor in
    [0.5, 1] (retries of many messages failing together spread out), capped."""
    delay = settings.HUB_RETRY_BACKOFF_SECONDS * (2 ** max(attempts - 1, 0))
    return min(delay, settings.HUB_RETRY_BACKOFF_MAX_SECONDS) * random.uniform(0.5, 1.0)  # noqa: S311


def _lease_lapsed(delivery: Delivery, now) -> bool:
    return delivery.claimed_at is None or delivery.claimed_at < now - timedelta(
        seconds=settings.HUB_DELIVERY_LEASE_SECONDS
    )


def _attempt_lost(delivery: Delivery, connector: str) -> None:
    """Records the attempt a dead worker left (caller holds the delivery's row lock)."""
    DeliveryAttempt.objects.create(
        delivery=delivery,
        attempt=delivery.attempts,
        connector=connector,
        outcome=DeliveryAttempt.Outcome.LOST,
        error="the worker was lost mid-send",
    )


def _fail(delivery: Delivery, error: str) -> None:
    """Settles a delivery as failed (caller holds its row lock) and fails its message."""
    now = timezone.now()
    Delivery.objects.filter(pk=delivery.pk).update(
        state=State.FAILED, claimed_by="", last_error=error[:2000], finished_at=now
    )
    delivery.state, delivery.last_error = State.FAILED, error[:2000]
    statuses.message_status_advance(message_id=delivery.message_id, to=Message.Status.FAILED, at=now)
    audit_record(
        tenant=delivery.tenant_id,
        action="delivery.failed",
        resource_type="message",
        resource_id=delivery.message_id,
        details={"delivery_id": delivery.pk, "attempts": delivery.attempts, "error": error[:200]},
    )


def delivery_claim(*, delivery_id: int, claim: str) -> tuple[Delivery, bool]:
    """Takes the delivery for this execution: (delivery, True) when it is ours to send.

    Pending is free. Sending is taken over only by a redelivery of the same task (its
    worker died mid-send) or once the lease lapsed; the lost attempt is recorded, and a
    delivery out of attempts fails instead. Sent or failed: never again.

    The common case, a pending delivery, is one conditional UPDATE (only one claimant can
    move it out of pending) and one read of what the send needs; anything else takes the
    row lock and decides."""
    now = timezone.now()
    taken = Delivery.objects.filter(pk=delivery_id, state=State.PENDING).update(
        state=State.SENDING, claimed_by=claim, claimed_at=now, attempts=F("attempts") + 1, enqueue_failed_at=None
    )
    if taken:
        delivery = Delivery.objects.select_related("account", "contact", "message__conversation").get(pk=delivery_id)
        # Ours unless a lease takeover came between the two statements.
        return delivery, delivery.state == State.SENDING and delivery.claimed_by == claim
    with transaction.atomic():
        # Everything the send needs, in the statement that takes the lock.
        delivery = (
            Delivery.objects.select_for_update(of=("self",))
            .select_related("account", "contact", "message__conversation")
            .get(pk=delivery_id)
        )
        if delivery.state in (State.SENT, State.FAILED):
            return delivery, False
        now = timezone.now()
        if delivery.state == State.SENDING:
            if not (delivery.claimed_by == claim or _lease_lapsed(delivery, now)):
                return delivery, False
            _attempt_lost(delivery, delivery.account.channel)
            if delivery.attempts >= settings.HUB_MAX_ATTEMPTS:
                _fail(delivery, "the worker sending this message was lost")
                return delivery, False
        attempts = delivery.attempts + 1
        Delivery.objects.filter(pk=delivery.pk).update(
            state=State.SENDING, claimed_by=claim, claimed_at=now, attempts=attempts, enqueue_failed_at=None
        )
        delivery.state, delivery.claimed_by, delivery.claimed_at, delivery.attempts = (
            State.SENDING,
            claim,
            now,
            attempts,
        )
    return delivery, True


def attachment_outbound(attachment: dict) -> dict:
    """A stored attachment descriptor as connectors get it: plus ``download_url``, the
    download path made absolute with ``HUB_WEBHOOK_BASE_URL`` (the app's public URL) when
    it is set, else the path itself."""
    base = settings.HUB_WEBHOOK_BASE_URL
    path = attachment.get("download_path", "")
    return {**attachment, "download_url": f"{base.rstrip('/')}{path}" if base else path}


def _outbound(delivery: Delivery) -> Outbound:
    message = delivery.message
    account, contact = delivery.account, delivery.contact
    attachments = tuple(attachment_outbound(a) for a in message.attachments or ())
    return Outbound(
        delivery_id=delivery.pk,
        external_id=delivery.external_id,
        channel=account.channel,
        account_external_id=account.external_id,
        account_settings=account.settings,
        secret=secret_decrypt(account.secret_encrypted),
        address=contact.address,
        contact_name=contact.name,
        text=message.content,
        message={**message_data(message), "attachments": list(attachments)},
        attachments=attachments,
        conversation={
            "id": message.conversation_id,
            "title": message.conversation.title,
            "channel": message.conversation.channel,
        },
    )


def _connection_release() -> None:
    """Gives this thread's database connection back to the pool before the connector's
    I/O, so the slots of a threads-pool worker waiting on platforms do not hold all of the
    pool's connections (outside a transaction only; without a pool nothing happens)."""
    if getattr(connection, "pool", None) is not None and not connection.in_atomic_block:
        connection.close()


def delivery_execute(*, delivery_id: int, claim: str | None = None) -> DeliveryResult:
    """Sends one delivery through its account's connector and settles it: ``SENT`` (the
    message ``sent``, then the connector's after-send step, e.g. a simulator's status
    reports), ``RETRY_LATER`` with a countdown for a transient error while attempts are
    left, ``FAILED`` otherwise, ``NOT_OURS`` when settled or held elsewhere. Every attempt
    is recorded with its connector, outcome, error and latency."""
    claim = claim or f"local:{uuid.uuid4().hex}"
    delivery, ours = delivery_claim(delivery_id=delivery_id, claim=claim)
    if not ours:
        return DeliveryResult(Outcome.NOT_OURS, delivery)
    channel = delivery.account.channel
    connector = connector_for(channel)
    outbound = _outbound(delivery)
    if delivery.message.status == Message.Status.ACCEPTED:
        # Its hand-over failed after commit (the sweep sent it): queued now.
        statuses.message_status_advance(message_id=delivery.message_id, to=Message.Status.QUEUED)
    _connection_release()

    started = time.perf_counter()
    error, kind = "", DeliveryAttempt.Outcome.SENT
    try:
        if not delivery.account.is_active:
            raise PermanentError("the channel account is disconnected")
        connector.send(outbound)
    except TransientError as exc:
        error = str(exc) or type(exc).__name__
        kind = DeliveryAttempt.Outcome.RETRY if delivery.attempts < settings.HUB_MAX_ATTEMPTS else "exhausted"
    except PermanentError as exc:
        error, kind = str(exc) or type(exc).__name__, DeliveryAttempt.Outcome.FAILED
    latency_ms = int((time.perf_counter() - started) * 1000)

    with transaction.atomic():
        held = Delivery.objects.filter(pk=delivery.pk, state=State.SENDING, claimed_by=claim)
        now = timezone.now()
        # Settling is conditional on still holding the claim: one UPDATE (it takes the row
        # lock) for the common outcomes, a locked read before failing.
        if kind == DeliveryAttempt.Outcome.SENT:
            still_ours = held.update(state=State.SENT, claimed_by="", last_error="", finished_at=now)
        elif kind == DeliveryAttempt.Outcome.RETRY:
            still_ours = held.update(state=State.PENDING, claimed_by="", last_error=error[:2000], pending_since=now)
        else:
            still_ours = held.select_for_update().exists()
        if not still_ours:
            logger.warning("delivery taken over before it settled", extra={"delivery_id": delivery.pk})
            return DeliveryResult(Outcome.NOT_OURS, Delivery.objects.get(pk=delivery.pk))
        DeliveryAttempt.objects.create(
            delivery=delivery,
            attempt=delivery.attempts,
            connector=channel,
            outcome=DeliveryAttempt.Outcome.FAILED if kind == "exhausted" else kind,
            error=error[:2000],
            latency_ms=latency_ms,
        )
        if kind == DeliveryAttempt.Outcome.SENT:
            delivery.state = State.SENT
            statuses.message_status_advance(
                message_id=delivery.message_id, to=Message.Status.SENT, at=now, message=delivery.message
            )
            result = DeliveryResult(Outcome.SENT, delivery)
        elif kind == DeliveryAttempt.Outcome.RETRY:
            delivery.state = State.PENDING
            result = DeliveryResult(
                Outcome.RETRY_LATER, delivery, countdown=retry_countdown(delivery.attempts), error=error
            )
        else:
            if kind == "exhausted":
                error = f"gave up after {delivery.attempts} attempts: {error}"
            _fail(delivery, error)
            result = DeliveryResult(Outcome.FAILED, delivery, error=error)
    if result.outcome == Outcome.SENT:
        try:
            connector.after_sent(outbound)
        except Exception:  # noqa: BLE001 - the message is sent; a lost report is the platform's to repeat
            logger.warning("after-send step failed", exc_info=True, extra={"delivery_id": delivery.pk})
    return result


# ---------------------------------------------------------------- operators and the sweep


@transaction.atomic
def delivery_requeue(*, delivery: Delivery, actor=None) -> bool:
    """A failed delivery goes back to the queue with a fresh budget of attempts (the admin
    action, ``manage.py retry_failed_deliveries``); its message moves failed -> queued.
    Attempt numbers start again at 1; the earlier rows stay (ordered by time).
    Returns whether it was requeued (only failed ones are)."""
    now = timezone.now()
    moved = Delivery.objects.filter(pk=delivery.pk, state=State.FAILED).update(
        state=State.PENDING, attempts=0, claimed_by="", last_error="", pending_since=now, finished_at=None
    )
    if not moved:
        return False
    statuses.message_status_advance(message_id=delivery.message_id, to=Message.Status.QUEUED, requeue=True)
    audit_record(
        tenant=delivery.tenant_id,
        actor=actor,
        action="delivery.requeued",
        resource_type="message",
        resource_id=delivery.message_id,
        details={"delivery_id": delivery.pk},
    )
    delivery_id = delivery.pk
    transaction.on_commit(lambda: _send_or_mark(delivery_id))
    return True


def _send_or_mark(delivery_id: int) -> None:
    try:
        queue.delivery_send(delivery_id)
    except Exception:  # noqa: BLE001 - the sweep relays it
        logger.warning("could not enqueue delivery", exc_info=True, extra={"delivery_id": delivery_id})
        Delivery.objects.filter(pk=delivery_id, state=State.PENDING).update(enqueue_failed_at=timezone.now())


def deliveries_requeue_failed(*, actor=None, limit: int = 1000) -> list[int]:
    """Re-queues failed deliveries (oldest first, at most ``limit``); returns their ids."""
    ids = list(Delivery.objects.filter(state=State.FAILED).order_by("finished_at", "pk").values_list("pk", flat=True))
    done = []
    for delivery in Delivery.objects.filter(pk__in=ids[:limit]).order_by("pk"):
        if delivery_requeue(delivery=delivery, actor=actor):
            done.append(delivery.pk)
    return done


def deliveries_sweep(*, now=None) -> dict:
    """Deliveries no worker will finish: ``sending`` past the lease (its worker died) goes
    back to pending with the lost attempt recorded, or fails out of attempts; ``pending``
    whose hand-over failed or that waited longer than ``HUB_STALE_PENDING_SECONDS`` goes to
    the broker again. A delivery sent twice to the queue is harmless: the claim sends once."""
    now = now or timezone.now()
    requeued, failed = [], []
    lease = now - timedelta(seconds=settings.HUB_DELIVERY_LEASE_SECONDS)
    for delivery_id in Delivery.objects.filter(state=State.SENDING, claimed_at__lt=lease).values_list("pk", flat=True):
        with transaction.atomic():
            delivery = Delivery.objects.select_for_update().select_related("account").get(pk=delivery_id)
            if delivery.state != State.SENDING or not _lease_lapsed(delivery, now):
                continue
            _attempt_lost(delivery, delivery.account.channel)
            if delivery.attempts >= settings.HUB_MAX_ATTEMPTS:
                _fail(delivery, "the worker sending this message was lost")
                failed.append(delivery_id)
                continue
            Delivery.objects.filter(pk=delivery_id).update(state=State.PENDING, claimed_by="", pending_since=now)
            requeued.append(delivery_id)
    stale = Delivery.objects.filter(state=State.PENDING).filter(
        pending_since__lt=now - timedelta(seconds=settings.HUB_STALE_PENDING_SECONDS)
    ) | Delivery.objects.filter(state=State.PENDING, enqueue_failed_at__isnull=False)
    stale_ids = list(stale.values_list("pk", flat=True))
    Delivery.objects.filter(pk__in=stale_ids, state=State.PENDING).update(pending_since=now)
    requeued += [pk for pk in stale_ids if pk not in requeued]
    for delivery_id in requeued:
        _send_or_mark(delivery_id)
    return {"requeued": requeued, "failed": failed}
