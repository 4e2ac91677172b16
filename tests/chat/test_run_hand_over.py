"""Runs committed by a request reach the broker from the process's background batcher:
all of them, each with its request's id, in batches; a refused batch is marked for the
relay. The sender is chat.queue's seam (what ChatConfig.ready wires to Celery)."""

import pytest
from django.db import connection, transaction

from chat import queue
from chat.models import AgentRun
from chat.services import turns
from config.core import background
from config.core.context import request_id_var
from config.db import release_connection
from tests.conversations.factories import ConversationFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sender():
    """A sender that records each batch (or refuses it), with the background path on."""
    saved = (queue._sender, queue._in_background)
    batches: list[list[tuple[int, str | None]]] = []
    state = {"refuse": False}

    def send(runs):
        if state["refuse"]:
            raise ConnectionError("broker down")
        batches.append(list(runs))

    queue.run_sender_set(send, in_background=lambda: True)
    yield batches, state
    background.flush_all()
    queue._sender, queue._in_background = saved


def test_each_accepted_run_is_handed_over_once_with_its_request_id(user, sender):
    batches, _ = sender
    conversation = ConversationFactory(owner=user)
    token = request_id_var.set("req-1234")
    try:
        accepted = [
            turns.turn_enqueue(user=user, conversation_id=conversation.pk, content=f"message {n}").run.pk
            for n in range(5)
        ]
    finally:
        request_id_var.reset(token)

    background.flush_all()

    sent = [pair for batch in batches for pair in batch]
    assert sent == [(run_id, "req-1234") for run_id in accepted]
    assert AgentRun.objects.filter(pk__in=accepted, enqueue_failed_at__isnull=True).count() == 5


def test_a_refused_batch_marks_every_run_for_the_relay(real_stack, user, sender):
    _, state = sender
    state["refuse"] = True
    conversation = ConversationFactory(owner=user)

    accepted = [turns.turn_enqueue(user=user, conversation_id=conversation.pk, content="hi").run.pk for _ in range(3)]
    background.flush_all()

    assert AgentRun.objects.filter(pk__in=accepted, status="queued", enqueue_failed_at__isnull=False).count() == 3


def test_a_rolled_back_turn_hands_nothing_over(user, sender):
    batches, _ = sender
    conversation = ConversationFactory(owner=user)

    with pytest.raises(RuntimeError), transaction.atomic():
        turns.turn_enqueue(user=user, conversation_id=conversation.pk, content="never stored")
        raise RuntimeError("rolled back")
    background.flush_all()

    assert batches == []
    assert not AgentRun.objects.exists()


def test_the_202_view_gives_its_connection_back_to_the_pool_outside_a_transaction(real_stack, user):
    list(AgentRun.objects.all()[:1])  # opens this thread's connection
    assert connection.connection is not None

    release_connection()

    assert connection.connection is None
    assert AgentRun.objects.count() == 0  # and the next query simply takes one again


def test_a_batch_is_one_task_per_run_each_with_its_request_id(real_broker):
    import json

    from chat.tasks import send_runs

    send_runs([(901, "req-a"), (902, None), (903, "req-c")])

    with real_broker.connection_for_write() as conn:
        client = conn.default_channel.client
        raw = list(reversed(client.lrange("default", 0, -1)))
    headers = [json.loads(message)["headers"] for message in raw]
    assert [(h["task"], h["argsrepr"], h.get("request_id")) for h in headers] == [
        ("chat.tasks.run_agent_task", "(901,)", "req-a"),
        ("chat.tasks.run_agent_task", "(902,)", None),
        ("chat.tasks.run_agent_task", "(903,)", "req-c"),
    ]
