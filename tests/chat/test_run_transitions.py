"""Every move of a run's status goes through run_transition, which knows the legal moves."""

import pytest

from chat.models import AgentRun
from chat.services import runs, turns

pytestmark = pytest.mark.django_db


def test_an_illegal_move_is_refused_and_the_row_is_untouched(user):
    run = turns.turn_answer(user=user, content="hello").run
    assert run.status == "completed"

    with pytest.raises(runs.IllegalRunTransition):
        runs.run_transition(run, to=AgentRun.Status.RUNNING, expect=AgentRun.Status.COMPLETED, claimed_by="x")

    stored = AgentRun.objects.get(pk=run.pk)
    assert (stored.status, stored.claimed_by) == ("completed", run.claimed_by)


@pytest.mark.parametrize(
    ("source", "target"),
    [("queued", "completed"), ("queued", "queued"), ("failed", "queued"), ("completed", "failed")],
)
def test_moves_that_are_never_legal(user, source, target):
    run = turns.turn_begin(user=user, content="hello").run
    AgentRun.objects.filter(pk=run.pk).update(status=source)

    with pytest.raises(runs.IllegalRunTransition):
        runs.run_transition(run, to=target, expect=source)

    assert AgentRun.objects.get(pk=run.pk).status == source


def test_a_legal_move_from_a_state_the_run_has_left_does_not_happen(user):
    run = turns.turn_begin(user=user, content="hello").run
    AgentRun.objects.filter(pk=run.pk).update(status="running", claimed_by="task-A")

    moved = runs.run_transition(run, to=AgentRun.Status.RUNNING, expect=AgentRun.Status.QUEUED, claimed_by="task-B")

    assert moved is False and run.status == "queued"
    assert AgentRun.objects.get(pk=run.pk).claimed_by == "task-A"


def test_a_running_run_moves_only_under_its_claim(user):
    run = turns.turn_begin(user=user, content="hello").run
    AgentRun.objects.filter(pk=run.pk).update(status="running", claimed_by="task-A")

    refused = runs.run_transition(run, to=AgentRun.Status.FAILED, expect=AgentRun.Status.RUNNING, claim="task-B")
    moved = runs.run_transition(run, to=AgentRun.Status.FAILED, expect=AgentRun.Status.RUNNING, claim="task-A")

    assert (refused, moved) == (False, True)
    assert AgentRun.objects.get(pk=run.pk).status == "failed"


def test_run_execute_returns_its_outcome(user, fake_openai):
    fake_openai.fail(503)
    first = turns.turn_begin(user=user, content="hi").run
    second = turns.turn_begin(user=user, content="hi").run

    on_worker = runs.run_execute(run_id=first.pk, delivery=runs.Delivery.on_worker(task_id="task-A"))
    fake_openai.fail(503)
    in_request = runs.run_execute(run_id=second.pk, delivery=runs.Delivery.in_request())
    again = runs.run_execute(run_id=second.pk, delivery=runs.Delivery.in_request())

    assert (on_worker.outcome, on_worker.run.status, on_worker.countdown) == ("retry_later", "queued", 2)
    assert (in_request.outcome, in_request.run.status) == ("failed", "failed")
    assert (again.outcome, again.run.status) == ("not_ours", "failed")
