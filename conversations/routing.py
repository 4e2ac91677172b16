"""Where messages of conversations bound to an external channel go out, without this app
knowing the hub: the hub registers its callables here at start-up (``hub.apps.HubConfig``).

- ``router(conversation, role)`` is asked, inside the message's transaction, for a
  conversation whose ``channel`` is not ``api``: it returns a callable that takes the stored
  message and routes it (a delivery handed to a worker after commit), or None when this
  message stays here (no binding, or an agent reply the binding does not send). A routed
  message starts ``accepted``.
- ``binder(user, data)`` creates a conversation bound to a contact from a create request's
  body (``channel_account_id`` + ``contact``); it validates the body itself.
"""

from collections.abc import Callable

_router: Callable | None = None
_binder: Callable | None = None


def router_set(router: Callable) -> None:
    global _router
    _router = router


def binder_set(binder: Callable) -> None:
    global _binder
    _binder = binder


def route_plan(*, conversation, role: str) -> Callable | None:
    """The callable that routes a message of ``role`` stored in ``conversation``, or None."""
    if _router is None or conversation.channel == "api":
        return None
    return _router(conversation=conversation, role=role)


def conversation_bind(*, user, data):
    if _binder is None:
        raise RuntimeError("no conversation binder is wired (hub.apps.HubConfig.ready sets it)")
    return _binder(user=user, data=data)
