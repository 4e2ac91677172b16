"""After-commit hand-overs off the request's critical path, in batches.

A request that has committed its rows still had to publish them before answering: the
Celery task of a queued run (kombu builds a Redis client and makes a round trip per
publish) and the audit seal request (a cache round trip, sometimes a publish). Neither is
part of the answer (the API never waits for delivery), and both are cheaper many at a
time. ``Batcher`` is one daemon thread per process that takes items from a queue and
hands everything waiting to ``handler`` in one call, so under load one publish (a Redis
pipeline) serves many requests, and a lone request pays no more than before.

What callers may rely on: items are handled in submission order, one batch at a time, at
most ``max_batch`` per call; ``handler`` never sees an empty batch; an exception from it is
logged and the thread goes on (the handler owns its failure policy: the run outbox marks
the runs for the relay); ``flush()`` hands over what is waiting in the calling thread (at
exit, and in tests). Items still queued when the process is killed are not handed over:
callers keep that case covered by something durable (runs: the stale-run sweep; seals:
the periodic seal). After a fork (Celery's prefork children) the thread is started again
in the child on its first submit; the parent's queue is not inherited.
"""

import atexit
import logging
import os
import queue
import threading
from collections.abc import Callable, Hashable

logger = logging.getLogger(__name__)

_batchers: "list[Batcher]" = []


def flush_all() -> None:
    """Every batcher's ``flush()``: what is queued and what is being handed over now is
    done when this returns (tests; a graceful stop)."""
    for batcher in list(_batchers):
        batcher.flush()


class Batcher:
    def __init__(self, handler: Callable[[list], None], *, name: str, max_batch: int = 500):
        self._handler = handler
        self._name = name
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: queue.Queue | None = None
        self._pid: int | None = None
        # Serialises handler calls between the thread and flush().
        self._handling = threading.Lock()
        _batchers.append(self)
        atexit.register(self.flush)

    def submit(self, item: Hashable) -> None:
        """Queues ``item`` for the next batch; returns at once."""
        self._ensure_thread().put(item)

    def flush(self) -> None:
        """Hands over, in the calling thread, every item waiting now, after the batch the
        thread may be handing over (so both are done on return)."""
        items_queue = self._queue
        if items_queue is None or self._pid != os.getpid():
            return
        while True:
            with self._handling:  # after the thread's batch in flight
                items = self._drain([])
                if items:
                    self._call(items)
                    for _ in items:
                        items_queue.task_done()
            if not items:
                break
        items_queue.join()  # an item the thread took but has not handled yet

    def _ensure_thread(self) -> queue.Queue:
        pid = os.getpid()
        if self._pid == pid and self._queue is not None:
            return self._queue
        with self._lock:
            if self._pid != pid or self._queue is None:
                self._queue = queue.Queue()
                self._pid = pid
                threading.Thread(target=self._run, args=(self._queue,), name=self._name, daemon=True).start()
        return self._queue

    def _drain(self, items: list) -> list:
        while len(items) < self._max_batch:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _run(self, items_queue: queue.Queue) -> None:
        while True:
            first = items_queue.get()
            with self._handling:
                items = self._drain([first])
                self._call(items)
            for _ in items:
                items_queue.task_done()

    def _call(self, items: list) -> None:
        try:
            self._handler(items)
        except Exception:  # noqa: BLE001 - the thread must outlive one failed batch
            logger.exception("background hand-over failed", extra={"batcher": self._name, "items": len(items)})
