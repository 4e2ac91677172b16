"""``run_retry``: a failed turn answered again by a new run, once."""

import pytest

from chat.models import AgentRun
from chat.services import runs
from tests.chat.factories import AgentRunFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("status", ["queued", "running", "completed"])
def test_only_failed_runs_are_retried(status):
    run = AgentRunFactory(status=status)

    assert runs.run_retry(run=run) is None
    assert AgentRun.objects.count() == 1


def test_a_retry_is_a_new_queued_run_for_the_same_message_handed_over_after_commit(
    django_capture_on_commit_callbacks,
):
    failed = AgentRunFactory(status="failed", error="boom")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        retry = runs.run_retry(run=failed)

    assert retry.status == "queued" and retry.trigger_message_id == failed.trigger_message_id
    assert (retry.conversation_id, retry.user_id, retry.tenant_id) == (
        failed.conversation_id,
        failed.user_id,
        failed.tenant_id,
    )
    # The hand-over to the queue waits for the commit: nothing has run yet.
    assert AgentRun.objects.get(pk=retry.pk).status == "queued"
    for callback in callbacks:
        callback()
    retry.refresh_from_db()
    assert retry.status == "completed"  # handed over at commit (eager queue in tests)
    assert runs.run_retry(run=failed) is None  # retried already: a newer run exists


def test_the_bulk_retry_counts_in_a_dry_run_and_limits(django_capture_on_commit_callbacks):
    for _ in range(3):
        AgentRunFactory(status="failed")

    dry = runs.runs_retry_failed(dry_run=True)
    with django_capture_on_commit_callbacks(execute=False):
        some = runs.runs_retry_failed(limit=2)

    assert (dry["found"], dry["retried"]) == (3, [])
    assert len(some["retried"]) == 2
    assert runs.runs_retry_failed(dry_run=True)["found"] == 1
