"""The hand-over of "this chain has new records" to the sealer, one floor below both sides.

``audit_record`` (services) calls ``seal_after_commit``; what actually runs the sealer is
wired in by ``audits.apps.AuditsConfig.ready`` (``audits.tasks.request_seal``: inline when
Celery runs eagerly, else a debounced Celery task). So the services never import the task
module, and the task module imports the services it calls (docs/audits.md, "Sealing")."""

import logging
from collections.abc import Callable

from django.db import transaction

logger = logging.getLogger(__name__)

_requester: Callable[[], object] | None = None


def seal_requester_set(requester: Callable[[], object]) -> None:
    """Names what asks for a seal (``audits.tasks.request_seal``); set once at start-up."""
    global _requester
    _requester = requester


def _request_seal() -> None:
    if _requester is None:
        logger.warning("audit seal not requested: no requester wired (audits.apps.AuditsConfig.ready)")
        return
    _requester()


def seal_after_commit() -> None:
    """Asks for a seal once the current transaction commits (at once outside one). One
    request per transaction however many records it inserts. A failure to ask is logged and
    never reaches the caller: the periodic ``seal-audit-chains`` beat entry seals what a lost
    request left behind."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(func is _request_seal for _, func, _ in connection.run_on_commit):
        return
    transaction.on_commit(_request_seal, robust=True)
