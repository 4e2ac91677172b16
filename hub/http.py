"""One HTTP client per process for everything the hub POSTs (the webhook connector, the
simulators' status reports), and the small thread pool the simulators report from.

``httpx.post`` builds a new client per call, and with it a new TLS context: loading the CA
bundle cost a delivery more CPU than the rest of its work together (py-spy on the worker:
a third of each task in ``ssl.create_default_context``; docs/benchmarks.md "hub"). A
shared client keeps the context and its keep-alive connections. Both are made on first use
in each process (a prefork child, a threads-pool worker, daphne), never inherited through
``fork``."""

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
from django.conf import settings

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
