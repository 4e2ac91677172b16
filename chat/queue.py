"""The hand-over of a stored run to the worker queue, one floor below both sides.

Services hand runs over through ``run_send`` (one run, in the caller's thread) or
``run_send_many`` (a batch, in one publish); the Celery task module (``chat.tasks``) is
wired in as the sender by ``chat.apps.ChatConfig.ready``. So neither imports the other:
the services stay free of Celery, and the task module imports the services it calls.

``in_background()`` says whether a run committed by a request may be handed over by the
process's background batcher (``chat.services.runs.run_enqueue``) rather than in the
request's thread: true on the real stack, false when Celery runs tasks eagerly (tests,
embedded mode), where sending executes the run and callers expect it done on return."""

from collections.abc import Callable, Sequence

_sender: Callable[[Sequence[tuple[int, str | None]]], object] | None = None
_in_background: Callable[[], bool] = lambda: False  # noqa: E731


def run_sender_set(
    sender: Callable[[Sequence[tuple[int, str | None]]], object], *, in_background: Callable[[], bool] | None = None
) -> None:
    """Names what hands (run id, request id) pairs to a worker, all in one publish, and
    what says whether committed runs go through the background batcher; set once at
    start-up."""
    global _sender, _in_background
    _sender = sender
    if in_background is not None:
        _in_background = in_background


def run_send(run_id: int, *, request_id: str | None = None) -> None:
    """Hands ``run_id`` to a worker. Raises what the broker raises when it refuses the task
    (callers keep the stored run as the outbox, see ``chat.services.runs.run_enqueue``)."""
    run_send_many([(run_id, request_id)])


def run_send_many(runs: Sequence[tuple[int, str | None]]) -> None:
    """Hands every (run id, request id) to a worker in one publish; all or, when the broker
    refuses, raises (callers then treat every run of the batch as unsent)."""
    if _sender is None:
        raise RuntimeError("no run sender is wired: chat.apps.ChatConfig.ready sets chat.tasks.execute_run")
    _sender(runs)


def in_background() -> bool:
    return _in_background()
