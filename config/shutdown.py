"""A bounded stop for the daphne process.

On SIGTERM daphne stops its reactor and cancels every pending application instance, but a
sync view (or sync code under it) runs in a worker thread that cancellation cannot reach.
When such a thread then waits on the event loop (``async_to_sync``: publishing an event,
the channel layer), it waits forever, because the loop is gone; and at interpreter exit
Python joins the executor's threads, so the process never exits. A rolling deploy needs it
gone within a bound, so once shutdown has begun a daemon thread gives the process
``grace`` seconds to exit on its own, then logs which threads were still running and
ends it with ``os._exit``.
"""

import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)

# Exit status when the grace expired: the process did not stop cleanly.
FORCED_EXIT_STATUS = 1


def install_shutdown_watchdog(grace_seconds: float) -> bool:
    """Arms the watchdog when the reactor's shutdown begins (SIGTERM, SIGINT, a stop).

    Only acts in a process whose Twisted reactor is installed (daphne installs it as it
    is imported); elsewhere (tests, WSGI, commands) the trigger never fires. Returns
    whether it was installed."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or grace_seconds <= 0:
        return False
    reactor.addSystemEventTrigger("before", "shutdown", start_watchdog, grace_seconds)
    return True


def start_watchdog(grace_seconds: float) -> threading.Thread:
    watchdog = threading.Thread(target=_exit_after, args=(grace_seconds,), name="shutdown-watchdog", daemon=True)
    watchdog.start()
    return watchdog


def _exit_after(grace_seconds: float) -> None:
    # A daemon thread keeps running while the interpreter joins the other threads at exit,
    # so it still fires when the main thread is stuck in that join.
    threading.Event().wait(grace_seconds)
    stuck = sorted(
        thread.name
        for thread in threading.enumerate()
        if thread is not threading.current_thread() and thread.is_alive() and not thread.daemon
    )
    logger.warning(
        "shutdown did not finish within %ss; exiting now",
        grace_seconds,
        extra={"threads_still_running": stuck},
    )
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - exiting anyway; a broken stream must not stop it
            pass
    os._exit(FORCED_EXIT_STATUS)
