"""A serving process's garbage collector (config/heap.py): once the app is loaded its heap
is frozen and young objects are collected in batches of ``GEN0``; config/gunicorn.py does
it in each worker."""

import gc
import importlib
import sys

import pytest

from config import heap


@pytest.fixture
def restored_gc():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_loads_the_views_freezes_the_heap_and_batches_young_collections(restored_gc):
    _, gen1, gen2 = gc.get_threshold()
    gc.unfreeze()

    heap.settle()

    assert gc.get_threshold() == (heap.GEN0, gen1, gen2)
    assert gc.get_freeze_count() > 50_000  # Django, DRF and the app, not a handful
    assert {"audits.views", "conversations.views", "hub.views"} <= set(sys.modules)
    # What the app allocates afterwards is collected as before: a cycle dropped is freed.
    cycle = [[]]
    cycle[0].append(cycle)
    ref = id(cycle)
    del cycle
    assert gc.collect() >= 1 and ref not in {id(o) for o in gc.get_objects()}


def test_each_gunicorn_worker_settles_once_it_has_loaded_the_app(restored_gc, monkeypatch):
    called = []
    monkeypatch.setattr(heap, "settle", lambda: called.append(True))
    config = importlib.import_module("config.gunicorn")

    config.post_worker_init(worker=None)

    assert called == [True]
