"""Database connections of threads that no request ends."""

from collections.abc import Callable

from django.db import connection


def releasing_connection(handler: Callable[[list], object]) -> Callable[[list], None]:
    """``handler`` for a background batcher (``config.core.background.Batcher``) whose
    work uses the database: after each batch the batcher's thread gives its pooled
    connection back, since no request ends there to do it. In a caller's thread
    (``flush()``) inside a transaction nothing is closed."""

    def handle(items: list) -> None:
        try:
            handler(items)
        finally:
            if not connection.in_atomic_block:
                connection.close()

    return handle
