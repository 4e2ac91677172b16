"""A stored run is the outbox: a broker that refuses the task at enqueue does not fail the
request that stored it, and the relay hands the run over once the broker is back."""

import socket

import pytest

from chat.models import AgentRun, Task
from chat.services import runs, turns
from chat.tasks import relay_unsent_runs
from config.celery import app
from config.core import background
from conversations.models import Message
from tests.conversations.factories import ConversationFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def broker_down():
    """Celery publishes for real, to a Redis port nothing listens on (the broker is down)."""
    saved_conf = (app.conf.task_always_eager, app.conf.broker_url, app.conf.broker_transport_options)
    saved_pools = (app._pool, app.amqp._producer_pool)
    app.conf.task_always_eager = False
    app.conf.broker_url = f"redis://127.0.0.1:{_closed_port()}/0"
    app.conf.broker_transport_options = {**(saved_conf[2] or {}), "max_retries": 0}
    # Celery's connection and producer pools keep the URL they were made with.
    app._pool, app.amqp._producer_pool = None, None
    yield
    for pool in (app.amqp._producer_pool, app._pool):
        if pool is not None:
            pool.force_close_all()
    app.conf.task_always_eager, app.conf.broker_url, app.conf.broker_transport_options = saved_conf
    app._pool, app.amqp._producer_pool = saved_pools


def test_message_posted_while_the_broker_is_down_is_202_and_its_run_is_marked_unsent(auth_api, user, broker_down):
    conversation = ConversationFactory(owner=user)

    response = auth_api.post(
        f"/api/v1/conversations/{conversation.pk}/messages", {"content": "add a task to buy milk"}, format="json"
    )

    assert response.status_code == 202, response.content
    # The hand-over to the broker runs after the answer, on the process's background batcher.
    background.flush_all()
    run = AgentRun.objects.get(pk=response.json()["run"]["id"])
    assert run.status == "queued"
    assert run.enqueue_failed_at is not None
    assert Message.objects.filter(conversation=conversation, role="user").count() == 1


def test_the_relay_hands_unsent_runs_over_and_clears_their_mark(user):
    run = turns.turn_begin(user=user, content="add a task to buy milk").run
    AgentRun.objects.filter(pk=run.pk).update(enqueue_failed_at=run.created_at)
    already_sent = turns.turn_begin(user=user, content="hello").run

    result = relay_unsent_runs.apply().get()

    assert result == {"relayed": [run.pk], "failed": []}
    run.refresh_from_db()
    assert (run.status, run.enqueue_failed_at) == ("completed", None)
    assert Task.objects.filter(owner=user, title="buy milk").count() == 1
    assert AgentRun.objects.get(pk=already_sent.pk).status == "queued"  # never relayed


def test_the_relay_keeps_the_mark_while_the_broker_is_still_down(user, broker_down):
    run = turns.turn_begin(user=user, content="hello").run
    AgentRun.objects.filter(pk=run.pk).update(enqueue_failed_at=run.created_at)

    result = runs.runs_relay()

    assert result == {"relayed": [], "failed": [run.pk]}
    run.refresh_from_db()
    assert run.status == "queued" and run.enqueue_failed_at is not None
