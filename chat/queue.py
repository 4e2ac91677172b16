"""The hand-over of a stored run to the worker queue, one floor below both sides.

Services hand runs over through ``run_send``; the Celery task module (``chat.tasks``) is
wired in as the sender by ``chat.apps.ChatConfig.ready``. So neither imports the other:
the services stay free of Celery, and the task module imports the services it calls."""

from collections.abc import Callable

_sender: Callable[[int], object] | None = None


def run_sender_set(sender: Callable[[int], object]) -> None:
    """Names what hands a run id to a worker (``execute_run.delay``); set once at start-up."""
    global _sender
    _sender = sender


def run_send(run_id: int) -> None:
    """Hands ``run_id`` to a worker. Raises what the broker raises when it refuses the task
    (callers keep the stored run as the outbox, see ``chat.services.runs.run_enqueue``)."""
    if _sender is None:
        raise RuntimeError("no run sender is wired: chat.apps.ChatConfig.ready sets chat.tasks.execute_run")
    _sender(run_id)
