"""The hand-over of "this chain has new records" to the sealer, one floor below both sides.

``audit_record`` (services) calls ``seal_after_commit``; what actually runs the sealer is
wired in by ``audits.apps.AuditsConfig.ready`` (``audits.tasks.request_seal``: inline when
Celery runs eagerly, else a debounced Celery task). So the services never import the task
module, and the task module imports the services it calls (docs/audits.md, "Sealing")."""

import logging
from collections.abc import Callable

from django.db import connection, transaction

from config.core import background

logger = logging.getLogger(__name__)

_requester: Callable[[], object] | None = None
_in_background: Callable[[], bool] = lambda: False  # noqa: E731


def seal_requester_set(requester: Callable[[], object], *, in_background: Callable[[], bool] | None = None) -> None:
    """Names what asks for a seal (``audits.tasks.request_seal``) and what says whether a
    commit asks through the process's background batcher (the real stack) rather than in
    the committing thread (eager Celery: the seal runs inline); set once at start-up."""
    global _requester, _in_background
    _requester = requester
    if in_background is not None:
        _in_background = in_background


def _ask() -> None:
    if _requester is None:
        logger.warning("audit seal not requested: no requester wired (audits.apps.AuditsConfig.ready)")
        return
    _requester()


# Off the request's path: one ask per batch of commits (the sealer seals every committed
# record it finds, so one ask covers all the commits before it). A batch lost with its
# process is what the periodic seal is for.
def _ask_in_background(_commits: list) -> None:
    try:
        _ask()
    finally:
        # No request ends in the batcher's thread to give a pooled connection back.
        if not connection.in_atomic_block:
            connection.close()


_seal_batcher = background.Batcher(_ask_in_background, name="audit-seal-request")


def _request_seal() -> None:
    if _in_background():
        _seal_batcher.submit(None)
    else:
        _ask()


def seal_after_commit() -> None:
    """Asks for a seal once the current transaction commits (at once outside one). One
    request per transaction however many records it inserts. A failure to ask is logged and
    never reaches the caller: the periodic ``seal-audit-chains`` beat entry seals what a lost
    request left behind."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(func is _request_seal for _, func, _ in connection.run_on_commit):
        return
    transaction.on_commit(_request_seal, robust=True)
