"""config.core.background.Batcher: after-commit hand-overs in batches, off the caller."""

import threading

from config.core.background import Batcher


def test_items_are_handed_over_in_order_in_batches_and_flush_waits_for_them():
    seen: list[list[int]] = []
    gate = threading.Event()

    def handler(items):
        gate.wait(5)  # the first batch blocks: the next items queue up behind it
        seen.append(list(items))

    batcher = Batcher(handler, name="test-batcher", max_batch=3)
    for item in range(7):
        batcher.submit(item)
    gate.set()
    batcher.flush()

    assert [item for batch in seen for item in batch] == list(range(7))
    assert all(1 <= len(batch) <= 3 for batch in seen)
    assert len(seen) < 7  # some items shared a batch


def test_a_failing_batch_is_logged_and_the_next_one_is_still_handed_over(caplog):
    seen: list[list[str]] = []

    def handler(items):
        if "bad" in items:
            raise RuntimeError("broker down")
        seen.append(list(items))

    batcher = Batcher(handler, name="test-failing", max_batch=1)
    batcher.submit("bad")
    batcher.flush()
    batcher.submit("good")
    batcher.flush()

    assert seen == [["good"]]
    assert "background hand-over failed" in caplog.text


def test_flush_with_nothing_submitted_returns_at_once():
    Batcher(lambda items: None, name="test-idle").flush()
