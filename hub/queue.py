"""The hand-over of a stored delivery to the worker queue (as ``chat.queue`` for runs):
``HubConfig.ready`` wires it to the Celery task, so services never import the task module."""

from collections.abc import Callable

_sender: Callable[[int], object] | None = None
_many_sender: Callable[[list[int]], object] | None = None
_in_background: Callable[[], bool] = lambda: False  # noqa: E731


def delivery_sender_set(
    sender: Callable[[int], object],
    *,
    many: Callable[[list[int]], object] | None = None,
    in_background: Callable[[], bool] | None = None,
) -> None:
    """Names what hands a delivery to a worker (``many``: several in one publish), and
    what says whether committed deliveries are handed over by the process's background
    batcher (``chat.queue.in_background``'s rule: not when Celery runs tasks eagerly); set
    once at start-up."""
    global _sender, _many_sender, _in_background
    _sender = sender
    _many_sender = many
    if in_background is not None:
        _in_background = in_background


def delivery_send(delivery_id: int) -> None:
    """Hands ``delivery_id`` to a worker; raises what the broker raises when it refuses."""
    if _sender is None:
        raise RuntimeError("no delivery sender is wired: hub.apps.HubConfig.ready sets hub.tasks.deliver_message")
    _sender(delivery_id)


def delivery_send_many(delivery_ids: list[int]) -> None:
    """Hands every delivery to a worker, in one publish when the sender can; all or, when
    the broker refuses, raises (callers then treat the batch as unsent)."""
    if _many_sender is None or len(delivery_ids) == 1:
        for delivery_id in delivery_ids:
            delivery_send(delivery_id)
        return
    _many_sender(delivery_ids)


def in_background() -> bool:
    return _in_background()
