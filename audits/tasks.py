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


# acks_late off (the project's default is on): the message is acknowledged when the task
# starts, and it is sent without a countdown, so a seal never sits unacknowledged in a
# worker. An unacknowledged message when the broker connection drops makes kombu restore it
# on close, which fails (AttributeError on the released connection) and kills the worker:
# with a seal behind nearly every request, a Redis blip stopped the worker. A lost seal is
# harmless: the sealer is idempotent and the beat entry seals what is left.
@shared_task(ignore_result=True, acks_late=False)
def seal_chains() -> int:
    """Seals every chain's committed backlog, in order (``services.audit_seal_chains``).
    Idempotent: concurrent runs queue on each chain's row lock and the later one finds
    nothing left. Returns the number of records sealed.

    The pending key is cleared first, before the sealer reads the backlog: a commit that
    still found it set (and sent no task) committed before that read, so this run seals it;
    a commit after the clear sends the next task."""
    try:
        cache.delete(SEAL_PENDING_KEY)
    except Exception:  # noqa: BLE001 - the cache is down: the key expires by itself
        logger.warning("could not clear the seal-pending key", exc_info=True)
    return services.audit_seal_chains()


def request_seal() -> None:
    """Runs after an audited transaction commits (``audits.sealing.seal_after_commit``).

    Embedded (Celery eager, no broker): seals now, in this process. On the real stack: the
    commit that sets the pending key sends one ``seal_chains`` task, at once (no countdown:
    see ``seal_chains``); commits while the key is set ride on that task, which clears the
    key before it reads the backlog. The key expires after AUDIT_SEAL_DELAY_SECONDS anyway,
    so a lost task holds later commits back for that long at most."""
    if current_app.conf.task_always_eager:
        services.audit_seal_chains()
        return
    delay = settings.AUDIT_SEAL_DELAY_SECONDS
    try:
        if cache.add(SEAL_PENDING_KEY, 1, timeout=delay):
            seal_chains.apply_async(expires=delay + settings.AUDIT_SEAL_INTERVAL_SECONDS)
    except Exception:  # noqa: BLE001 - Redis or the broker down: the beat entry seals later
        cache_problem = "audit seal not scheduled (broker or cache unavailable); the periodic seal will catch up"
        logger.warning(cache_problem, exc_info=True)


def seal_in_background() -> bool:
    """Commits ask for their seal from a background thread unless Celery runs tasks eagerly
    (then ``request_seal`` seals inline and callers expect the records sealed on return)."""
    return not current_app.conf.task_always_eager


@shared_task
def purge_old_audits() -> int:
    """Applies the retention period; 0 days (the default) keeps every record."""
    days = settings.AUDIT_RETENTION_DAYS
    if days <= 0:
        return 0
    return sum(result.deleted for result in services.audit_purge(older_than=timedelta(days=days)))
