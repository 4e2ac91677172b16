"""Celery tasks: thin wrappers that load by id and call chat.services."""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from .agent.types import ProviderError
from .models import AgentRun

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    # Redelivered if the worker dies mid-run; run_execute skips runs already settled.
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # bounded by AGENT_MAX_ATTEMPTS below
)
def run_agent_task(self, run_id: int) -> str:
    from . import services

    attempts_left = settings.AGENT_MAX_ATTEMPTS - (self.request.retries + 1)
    try:
        run = services.run_execute(run_id=run_id, allow_retry=attempts_left > 0, claim=self.request.id)
    except AgentRun.DoesNotExist:
        logger.info("run vanished before it ran", extra={"run_id": run_id})
        return "missing"
    except ProviderError as exc:
        countdown = settings.AGENT_RETRY_BACKOFF_SECONDS * (2**self.request.retries)
        logger.warning("transient provider error, retrying", extra={"run_id": run_id, "countdown": countdown})
        raise self.retry(exc=exc, countdown=countdown) from exc
    except services.AgentUnavailable:
        return "failed"
    except SoftTimeLimitExceeded:
        run = AgentRun.objects.select_related("conversation", "user").get(pk=run_id)
        if run.claimed_by == self.request.id:
            services.run_fail(run=run, error="the turn took longer than the task time limit")
        return "failed"
    return run.status


@shared_task
def sweep_stuck_runs() -> dict:
    from . import services

    return services.runs_sweep()


@shared_task
def relay_unsent_runs() -> dict:
    """The outbox relay: runs stored while the broker was down go to the broker now."""
    from . import services

    return services.runs_relay()
