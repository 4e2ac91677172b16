"""Celery tasks of the chat app: each loads by id, calls one service in chat.services and
maps its result to Celery (retry, return value). The retry policy lives in the service.

Registered names stay as they were (``chat.tasks.run_agent_task``...) while the functions
carry domain names: messages already in a broker keep finding their task."""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from .models import AgentRun
from .services import runs

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="chat.tasks.run_agent_task",
    # Redelivered if the worker dies mid-run; run_execute skips runs already settled.
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # bounded by AGENT_MAX_ATTEMPTS in run_execute
)
def execute_run(self, run_id: int) -> str:
    """Executes one queued run on a worker; returns the run's status (or "missing")."""
    try:
        result = runs.run_execute(run_id=run_id, delivery=runs.Delivery.on_worker(task_id=self.request.id))
    except AgentRun.DoesNotExist:
        logger.info("run vanished before it ran", extra={"run_id": run_id})
        return "missing"
    except SoftTimeLimitExceeded:
        run = AgentRun.objects.select_related("conversation", "user").get(pk=run_id)
        if run.claimed_by == self.request.id:
            runs.run_fail(run=run, error="the turn took longer than the task time limit")
        return "failed"
    if result.outcome == runs.Outcome.RETRY_LATER:
        logger.warning("transient provider error, retrying", extra={"run_id": run_id, "countdown": result.countdown})
        raise self.retry(exc=result.error, countdown=result.countdown)
    return result.run.status


@shared_task(name="chat.tasks.sweep_stuck_runs")
def sweep_stuck_runs() -> dict:
    return runs.runs_sweep()


@shared_task(name="chat.tasks.relay_unsent_runs")
def relay_unsent_runs() -> dict:
    """The outbox relay: runs stored while the broker was down go to the broker now."""
    return runs.runs_relay()


def send_runs(runs) -> None:
    """Publishes ``execute_run`` for every (run id, request id) in one Redis pipeline
    (kombu's ``Producer.batch``): one client and one round trip for the batch instead of
    one per run. Each task carries the request id of the request that stored its run (the
    batch is sent from a background thread, outside that request's context). Raises what
    the broker raises; then none of the batch may be assumed sent."""
    app = execute_run.app
    if app.conf.task_always_eager or len(runs) == 1:
        for run_id, request_id in runs:
            execute_run.apply_async((run_id,), headers={"request_id": request_id} if request_id else None)
        return
    with app.producer_or_acquire() as producer, producer.batch():
        for run_id, request_id in runs:
            execute_run.apply_async(
                (run_id,), producer=producer, headers={"request_id": request_id} if request_id else None
            )


def runs_in_background() -> bool:
    """Committed runs go through the process's background batcher unless Celery runs tasks
    eagerly (tests, embedded mode: sending executes the run, callers expect it done)."""
    return not execute_run.app.conf.task_always_eager
