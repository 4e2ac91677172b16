"""One HTTP client per process for everything the hub POSTs (the webhook connector, the
simulators' status reports), the small thread pool the simulators report from, and the
per-account batching of those reports (``ReportBatcher``).

``httpx.post`` builds a new client per call, and with it a new TLS context: loading the CA
bundle cost a delivery more CPU than the rest of its work together (py-spy on the worker:
a third of each task in ``ssl.create_default_context``; docs/benchmarks.md "hub"). A
shared client keeps the context and its keep-alive connections. Both are made on first use
in each process (a prefork child, a threads-pool worker, daphne), never inherited through
``fork``."""

import logging
import os
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_client: tuple[int, httpx.Client] | None = None
_reporter: tuple[int, ThreadPoolExecutor] | None = None

# Status reports run beside the deliveries, not in their slot. Each is one short POST to our
# own webhook, but it waits as long as that web process's queue: with few threads the
# reports queued here (4 threads: sent -> delivered p50 5.8 s at 50 users), so as many as a
# busy delivery worker may have outstanding.
REPORT_THREADS = 32


def http_client() -> httpx.Client:
    """This process's client: proxies from the environment ignored, the webhook timeout."""
    global _client
    pid = os.getpid()
    current = _client
    if current is None or current[0] != pid:
        with _lock:
            if _client is None or _client[0] != pid:
                _client = (
                    pid,
                    httpx.Client(
                        trust_env=False,
                        timeout=settings.HUB_WEBHOOK_TIMEOUT_SECONDS,
                        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                    ),
                )
            current = _client
    return current[1]


def report_submit(fn, *args) -> Future:
    """Runs ``fn(*args)`` on this process's reporter threads (made on first use)."""
    global _reporter
    pid = os.getpid()
    current = _reporter
    if current is None or current[0] != pid:
        with _lock:
            if _reporter is None or _reporter[0] != pid:
                _reporter = (pid, ThreadPoolExecutor(max_workers=REPORT_THREADS, thread_name_prefix="hub-report"))
            current = _reporter
    return current[1].submit(fn, *args)


# Reports one POST carries at most (a platform's notification holds a bounded list too).
REPORT_BATCH_MAX = 100


class ReportBatcher:
    """Status reports to POST, at most one POST in flight per account: a report for an
    account whose POST is on its way waits and goes with the next one, in one notification
    (``value.statuses[]`` / ``messaging[]`` are lists), in the order it came. Idle, a
    report goes at once, alone; under load an account's reports arrive together instead of
    one webhook each, and each webhook the web process answers costs it one statement a
    run of the same status (docs/hub.md "Status reports").

    ``post(key, items)`` sends one batch (``key``: what names the account, hashable) and
    returns the items that follow from it (e.g. ``read`` after ``delivered``), which are
    queued behind; an exception loses that batch (logged), as a platform's lost report
    would leave the message ``sent``."""

    def __init__(self, post: Callable[[Hashable, list], list], *, submit=None, max_batch: int = REPORT_BATCH_MAX):
        self._post = post
        self._submit = submit or report_submit
        self._max = max_batch
        self._lock = threading.Lock()
        self._pending: dict[Hashable, list] = {}
        self._in_flight: set[Hashable] = set()

    def add(self, key: Hashable, items: list) -> None:
        with self._lock:
            self._pending.setdefault(key, []).extend(items)
            if key in self._in_flight:
                return
            self._in_flight.add(key)
        self._submit(self._drain, key)

    def _drain(self, key: Hashable) -> None:
        while True:
            with self._lock:
                waiting = self._pending.get(key) or []
                batch, rest = waiting[: self._max], waiting[self._max :]
                if rest:
                    self._pending[key] = rest
                else:
                    self._pending.pop(key, None)
                if not batch:
                    self._in_flight.discard(key)
                    return
            try:
                follow = self._post(key, batch)
            except Exception:  # noqa: BLE001 - as a platform's lost report: the messages stay as they are
                logger.warning("status report failed", exc_info=True, extra={"reports": len(batch)})
                follow = []
            if follow:
                with self._lock:
                    self._pending.setdefault(key, []).extend(follow)
