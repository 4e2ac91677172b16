"""Giving a thread's pooled database connection back when its work is done.

Django closes a request's connections on ``request_finished``: after the response is sent,
through another thread hop. Under load that wait held the pool's connections while other
requests queued for one (docs/benchmarks.md, branch "accept"), so the write paths give
theirs back as soon as their work is done. A background batcher's thread has no request
whose end would close its connection at all. One rule for both: nothing is released inside
an atomic block (a caller's or a test's transaction), and a later query in the thread
simply takes a connection again."""

from collections.abc import Callable

from django.db import connection


def release_connection() -> None:
    """This thread's connection back to the pool now, unless a transaction holds it."""
    if not connection.in_atomic_block:
        connection.close()


def releasing_connection(handler: Callable[[list], object]) -> Callable[[list], None]:
    """``handler`` for a background batcher (``config.core.background.Batcher``) whose
    work uses the database: its thread gives the connection back after each batch."""

    def handle(items: list) -> None:
        try:
            handler(items)
        finally:
            release_connection()

    return handle
