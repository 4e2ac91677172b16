"""The hand-over of a stored delivery to the worker queue (as ``chat.queue`` for runs):
``HubConfig.ready`` wires it to the Celery task, so services never import the task module."""

from collections.abc import Callable

_sender: Callable[[int], object] | None = None


def delivery_sender_set(sender: Callable[[int], object]) -> None:
    global _sender
    _sender = sender


def delivery_send(delivery_id: int) -> None:
    """Hands ``delivery_id`` to a worker; raises what the broker raises when it refuses."""
    if _sender is None:
        raise RuntimeError("no delivery sender is wired: hub.apps.HubConfig.ready sets hub.tasks.deliver_message")
    _sender(delivery_id)
