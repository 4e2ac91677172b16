"""The garbage collector of a serving process: its startup heap frozen, young objects
collected in larger batches.

Measured under the audits page at 50-100 connections (docs/benchmarks.md, "Sixth round"),
with CPython's defaults (thresholds 700, 10, 10) the two served processes of a run (the app
and the bare baseline) made 71 full collections in about a minute of load, each walking
the whole heap (Django, DRF, the app: ~150 ms each, every request in flight waiting),
3-5 s of CPU in all: the tail of the latency was the collector's. Two changes, both
standard for long-lived servers:

- ``gc.freeze()`` once the application is loaded (modules, URL patterns and the views
  they import, the middleware chain): what startup built is moved to the permanent
  generation, which no collection walks again. It lives as long as the process anyway.
- ``gc.set_threshold(GEN0, 10, 10)`` with ``GEN0`` = 10,000 instead of 700: under load
  dozens of requests are in flight at each young collection, and every object they hold
  survived it and was promoted, so the older generations filled with short-lived objects
  and full collections came often. In batches of 10,000 most of a request's objects are
  gone before the collection sees them.

Cycles among frozen objects are never collected; that is the price, and a process keeps
those objects for its life anyway. Only what serves requests calls ``settle``
(config/gunicorn.py, after a worker loaded the app)."""

import gc

GEN0 = 10_000


def settle() -> None:
    """Loads what a first request would (the URL patterns, hence every view module), then
    freezes the heap and sets the thresholds (module docstring)."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the views
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0, gen1, gen2)
