"""Who may run a run: claims, leases, redeliveries and the sweep."""

import threading
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


# ---------------------------------------------------------------- turns answered in the request


def test_a_turn_answered_in_the_request_stores_its_run_claimed_with_the_message(user):
    turn = turns.turn_begin(user=user, content="add a task to buy milk", claim=True)

    run = AgentRun.objects.get(pk=turn.run.pk)
    assert (run.status, run.attempts) == ("running", 1)
    assert run.claimed_by.startswith("request:") and run.started_at is not None
    # Nobody else runs it while its claim holds: a worker's task for it does nothing.
    execute_run.apply(args=[run.pk], task_id="task-B")
    assert AgentRun.objects.get(pk=run.pk).status == "running" and not Task.objects.exists()


def test_a_turn_whose_request_died_before_answering_is_swept_and_answered(
    user, settings, django_capture_on_commit_callbacks
):
    # The request stored the message and its claimed run, then its process died.
    turn = turns.turn_begin(user=user, content="add a task to survive", claim=True)
    assert runs.runs_sweep()["requeued"] == []  # within the lease: not touched
    later = timezone.now() + timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 61)

    with django_capture_on_commit_callbacks(execute=True):
        result = runs.runs_sweep(now=later)

    assert result["requeued"] == [turn.run.pk]
    run = AgentRun.objects.get(pk=turn.run.pk)
    assert run.status == "completed"  # eager Celery answered the re-queued run on commit
    assert Task.objects.get().title == "survive"
    assert Message.objects.get(role="user").pk == turn.message.pk


def test_the_history_of_a_new_conversation_is_its_first_message(user, settings):
    from chat import selectors

    turn = turns.turn_begin(user=user, content="  add a task to buy milk  ", claim=True)

    assert turn.new_conversation
    assert turn.history() == selectors.conversation_history(
        conversation=turn.conversation, upto_seq=turn.message.seq, budget_chars=settings.AGENT_HISTORY_CHARS
    )
    # Cut to the budget like the stored history is.
    settings.AGENT_HISTORY_CHARS = 5
    assert turn.history() == [{"role": "user", "content": "ilk  "}]
    assert turn.history() == selectors.conversation_history(
        conversation=turn.conversation, upto_seq=turn.message.seq, budget_chars=5
    )


def test_a_turn_in_an_existing_conversation_reads_its_history(user):
    first = turns.turn_answer(user=user, content="add a task to buy milk")

    second = turns.turn_begin(user=user, content="what are my tasks", conversation_id=first.conversation.pk, claim=True)

    assert not second.new_conversation and second.history() is None
    result = second.execute(runs.Delivery.in_request())
    assert result.outcome == runs.Outcome.COMPLETED
    assert "buy milk" in result.run.reply_message.content


def test_a_turn_cancelled_after_its_tool_call_keeps_no_half_answer(user, django_capture_on_commit_callbacks):
    """With the local provider the tool calls and the reply commit together: a listener
    that leaves after the tool ran leaves the message, a failed run, no task, no reply."""
    turn = turns.turn_begin(user=user, content="add a task to buy milk", claim=True)
    cancel = threading.Event()
    seen = []

    def sink(frame):
        seen.append(frame["type"])
        if frame["type"] == "tool.result":
            cancel.set()

    with django_capture_on_commit_callbacks(execute=True):
        result = turn.execute(runs.Delivery.in_request(sink=sink, listener_gone=cancel))

    assert result.outcome == runs.Outcome.CANCELLED
    assert seen[:3] == ["run.started", "tool.call", "tool.result"] and seen[-1] == "run.failed"
    assert AgentRun.objects.get(pk=turn.run.pk).status == "failed"
    assert not Task.objects.exists() and not Message.objects.filter(role="assistant").exists()
    assert Message.objects.filter(pk=turn.message.pk).exists()


def test_on_committed_runs_before_the_other_after_commit_work(user, django_capture_on_commit_callbacks):
    """The SSE stream sends its first event from ``on_committed``: the message is stored,
    and the seal request and the group publish (after-commit work) have not run yet."""
    from audits.models import AuditRecord

    seen = []

    def on_committed(turn):
        record = AuditRecord.objects.get(action="message.sent", resource_id=str(turn.message.pk))
        seen.append((turn.message.seq, turn.run.status, record.hash))

    with django_capture_on_commit_callbacks(execute=True):
        turn = turns.turn_begin(user=user, content="hello", claim=True, on_committed=on_committed)

    assert seen == [(1, "running", None)]  # called once, before the (eager) seal
    assert AuditRecord.objects.get(action="message.sent", resource_id=str(turn.message.pk)).hash
