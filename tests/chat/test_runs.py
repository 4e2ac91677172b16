"""Who may run a run: claims, leases, redeliveries and the sweep."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chat.models import AgentRun, Task
from chat.services import runs, turns
from chat.tasks import execute_run, sweep_stuck_runs
from conversations.models import Message

pytestmark = pytest.mark.django_db


def _running(run, *, claimed_by: str, started_ago: timedelta = timedelta(0), attempts: int = 1):
    AgentRun.objects.filter(pk=run.pk).update(
        status="running", claimed_by=claimed_by, started_at=timezone.now() - started_ago, attempts=attempts
    )


def test_a_duplicate_task_leaves_a_run_another_execution_holds(user):
    run = turns.turn_begin(user=user, content="add a task to once").run
    _running(run, claimed_by="task-A")

    execute_run.apply(args=[run.pk], task_id="task-B")

    run.refresh_from_db()
    assert (run.status, run.claimed_by, run.attempts) == ("running", "task-A", 1)
    assert not Task.objects.exists() and not Message.objects.filter(role="assistant").exists()


def test_a_redelivery_of_the_same_task_takes_the_run_over(user):
    run = turns.turn_begin(user=user, content="add a task to once").run
    _running(run, claimed_by="task-A")

    execute_run.apply(args=[run.pk], task_id="task-A")

    run.refresh_from_db()
    assert (run.status, run.attempts) == ("completed", 2)
    assert Task.objects.count() == 1


def test_a_lapsed_lease_may_be_taken_over_by_another_task(user, settings):
    run = turns.turn_begin(user=user, content="hello").run
    _running(run, claimed_by="task-A", started_ago=timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 61))

    execute_run.apply(args=[run.pk], task_id="task-B")

    run.refresh_from_db()
    assert (run.status, run.claimed_by, run.attempts) == ("completed", "task-B", 2)


def test_run_fail_never_overwrites_a_settled_or_taken_over_run(user):
    done = turns.turn_answer(user=user, content="hello").run
    held = turns.turn_begin(user=user, content="hello").run
    _running(held, claimed_by="task-B")
    stale_view = AgentRun.objects.get(pk=held.pk)
    stale_view.claimed_by = "task-A"

    assert runs.run_fail(run=done, error="late") is False
    assert runs.run_fail(run=stale_view, error="late") is False
    assert AgentRun.objects.get(pk=done.pk).status == "completed"
    assert AgentRun.objects.get(pk=held.pk).status == "running"


def test_the_sweep_requeues_a_stale_queued_run_once_per_period(user, settings, django_capture_on_commit_callbacks):
    run = turns.turn_begin(user=user, content="hello").run
    AgentRun.objects.filter(pk=run.pk).update(
        queued_at=timezone.now() - timedelta(seconds=settings.AGENT_STALE_QUEUED_SECONDS + 1)
    )

    with django_capture_on_commit_callbacks(execute=False) as first_callbacks:
        first = sweep_stuck_runs.apply().get()
    with django_capture_on_commit_callbacks(execute=False) as second_callbacks:
        second = sweep_stuck_runs.apply().get()

    assert first == {"requeued": [run.pk], "failed": []}
    assert second == {"requeued": [], "failed": []}
    assert (len(first_callbacks), len(second_callbacks)) == (1, 0)


def test_the_sweep_leaves_a_run_within_its_lease(user):
    run = turns.turn_begin(user=user, content="hello").run
    _running(run, claimed_by="task-A", started_ago=timedelta(seconds=30))

    assert sweep_stuck_runs.apply().get() == {"requeued": [], "failed": []}
    assert AgentRun.objects.get(pk=run.pk).status == "running"
