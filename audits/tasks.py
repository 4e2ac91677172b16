"""Audit work off the request path: sealing the chains (right after commits, debounced, and
on a schedule as a safety net) and retention (CELERY_BEAT_SCHEDULE)."""

import logging
from datetime import timedelta

from celery import current_app, shared_task
from django.conf import settings
from django.core.cache import cache

from . import services

logger = logging.getLogger(__name__)

# Set while a seal is scheduled and has not started: commits in that window ride on it.
SEAL_PENDING_KEY = "audits:seal-pending"


@shared_task(ignore_result=True)
def seal_chains() -> int:
    """Seals every chain's committed backlog, in order (``services.audit_seal_chains``).
    Idempotent: concurrent runs queue on each chain's row lock and the later one finds
    nothing left. Returns the number of records sealed."""
    return services.audit_seal_chains()


def request_seal() -> None:
    """Runs after an audited transaction commits (``audits.sealing.seal_after_commit``).

    Embedded (Celery eager, no broker): seals now, in this process. On the real stack: one
    ``seal_chains`` task per AUDIT_SEAL_DELAY_SECONDS window. The window's key is set
    before the task is sent with a countdown equal to the window, so the task starts after
    the key expires, hence after every commit that found the key set and relied on it."""
    if current_app.conf.task_always_eager:
        services.audit_seal_chains()
        return
    delay = settings.AUDIT_SEAL_DELAY_SECONDS
    try:
        if cache.add(SEAL_PENDING_KEY, 1, timeout=delay):
            seal_chains.apply_async(countdown=delay, expires=delay + settings.AUDIT_SEAL_INTERVAL_SECONDS)
    except Exception:  # noqa: BLE001 - Redis or the broker down: the beat entry seals later
        cache_problem = "audit seal not scheduled (broker or cache unavailable); the periodic seal will catch up"
        logger.warning(cache_problem, exc_info=True)


@shared_task
def purge_old_audits() -> int:
    """Applies the retention period; 0 days (the default) keeps every record."""
    days = settings.AUDIT_RETENTION_DAYS
    if days <= 0:
        return 0
    return sum(result.deleted for result in services.audit_purge(older_than=timedelta(days=days)))
