"""Celery tasks of the hub: load by id, call one service, map its result to Celery."""

import logging

from celery import shared_task

from .models import Delivery
from .services import deliveries

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="hub.tasks.deliver_message",
    # Redelivered if the worker dies mid-send; the claim sends a delivery once.
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # bounded by HUB_MAX_ATTEMPTS in delivery_execute
)
def deliver_message(self, delivery_id: int) -> str:
    """Sends one delivery; returns its outcome (or "missing")."""
    try:
        result = deliveries.delivery_execute(delivery_id=delivery_id, claim=self.request.id)
    except Delivery.DoesNotExist:
        return "missing"
    if result.outcome == deliveries.Outcome.RETRY_LATER:
        logger.warning(
            "transient connector error, retrying", extra={"delivery_id": delivery_id, "countdown": result.countdown}
        )
        raise self.retry(countdown=result.countdown)
    return str(result.outcome)


@shared_task(name="hub.tasks.sweep_deliveries")
def sweep_deliveries() -> dict:
    return deliveries.deliveries_sweep()


def send_deliveries(delivery_ids) -> None:
    """Publishes ``deliver_message`` for every delivery in one Redis pipeline (kombu's
    ``Producer.batch``, as ``chat.tasks.send_runs``). Raises what the broker raises; then
    none of the batch may be assumed sent."""
    app = deliver_message.app
    if app.conf.task_always_eager or len(delivery_ids) == 1:
        for delivery_id in delivery_ids:
            deliver_message.delay(delivery_id)
        return
    with app.producer_or_acquire() as producer, producer.batch():
        for delivery_id in delivery_ids:
            deliver_message.apply_async((delivery_id,), producer=producer)
