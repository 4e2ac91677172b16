"""Outbound delivery: routing after commit, the status lifecycle (forward only, stored with
its time), retries with backoff then failed with every attempt recorded, the real webhook
connector, the claim/lease discipline and the sweep."""

import datetime as dt
import time

import pytest
from django.utils import timezone

from chat.models import AgentRun
from conversations.models import Message
from hub import platforms
from hub.models import Delivery, DeliveryAttempt, MessageStatusChange
from hub.services import deliveries, statuses
from tests.helpers import assert_error

from .conftest import connect, signed_post

pytestmark = pytest.mark.django_db


def _bound_conversation(api, account, address="447700900001"):
    response = api.post(
        "/api/v1/conversations/",
        {"channel_account_id": account.pk, "contact": {"address": address, "name": "Grace"}},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def _post(api, conversation_id, content="Your order has shipped"):
    return api.post(f"/api/v1/conversations/{conversation_id}/messages", {"content": content}, format="json")


def _history(message_id):
    return list(
        MessageStatusChange.objects.filter(message_id=message_id).order_by("at", "id").values_list("status", flat=True)
    )


def test_a_posted_message_is_accepted_at_once_and_routed_after_commit(
    auth_api, whatsapp, django_capture_on_commit_callbacks
):
    conversation = _bound_conversation(auth_api, whatsapp.account)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = _post(auth_api, conversation["id"])
    before_commit = Delivery.objects.get()
    for callback in callbacks:
        callback()

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["message"]["status"] == "accepted" and body["run"] is None  # no agent on an operator's message
    assert conversation["channel"] == "whatsapp"
    assert before_commit.state == "pending" and before_commit.attempts == 0
    message = Message.objects.get(pk=body["message"]["id"])
    assert message.status == "read"  # report_read: the simulator reported delivered, then read
    assert _history(message.pk) == ["accepted", "queued", "sent", "delivered", "read"]
    assert not AgentRun.objects.exists()
    [attempt] = DeliveryAttempt.objects.all()
    assert (attempt.attempt, attempt.connector, attempt.outcome, attempt.error) == (1, "whatsapp", "sent", "")
    assert attempt.latency_ms is not None


def test_the_message_detail_shows_status_history_and_deliveries(auth_api, whatsapp, django_capture_on_commit_callbacks):
    conversation = _bound_conversation(auth_api, whatsapp.account)
    with django_capture_on_commit_callbacks(execute=True):
        message_id = _post(auth_api, conversation["id"]).json()["message"]["id"]

    detail = auth_api.get(f"/api/v1/conversations/{conversation['id']}/messages/{message_id}")

    assert detail.status_code == 200
    body = detail.json()
    assert body["id"] == message_id and body["status"] == "read"
    assert [c["status"] for c in body["status_history"]] == ["accepted", "queued", "sent", "delivered", "read"]
    assert [(d["attempt"], d["outcome"]) for d in body["deliveries"]] == [(1, "sent")]
    assert set(body["deliveries"][0]) == {"attempt", "connector", "outcome", "error", "latency_ms", "at"}
    assert_error(auth_api.get(f"/api/v1/conversations/{conversation['id']}/messages/999999"), 404, "not_found")


def test_one_open_conversation_per_contact(auth_api, whatsapp, tenant):
    first = _bound_conversation(auth_api, whatsapp.account)

    again = auth_api.post(
        "/api/v1/conversations/",
        {"channel_account_id": whatsapp.account.pk, "contact": {"address": "447700900001"}},
        format="json",
    )
    error = assert_error(again, 409, "conversation_exists")
    assert error["details"]["conversation_id"] == first["id"]
    auth_api.patch(f"/api/v1/conversations/{first['id']}", {"status": "closed"}, format="json")
    reopened = _bound_conversation(auth_api, whatsapp.account)
    assert reopened["id"] != first["id"]


def test_binding_input_errors(auth_api, whatsapp):
    bad = auth_api.post("/api/v1/conversations/", {"channel_account_id": "x", "contact": {}}, format="json")
    missing = auth_api.post(
        "/api/v1/conversations/", {"channel_account_id": 99999, "contact": {"address": "1"}}, format="json"
    )
    # An external channel without a contact would be a label that routes nowhere.
    unbound = auth_api.post("/api/v1/conversations/", {"channel": "whatsapp"}, format="json")

    assert_error(bad, 400, "validation_error")
    assert_error(missing, 404, "not_found")
    assert "channel" in assert_error(unbound, 400, "validation_error")["details"]
    assert not Message.objects.exists()


def test_the_sync_chat_refuses_a_bound_conversation_and_stores_nothing(auth_api, whatsapp):
    conversation = _bound_conversation(auth_api, whatsapp.account)

    response = auth_api.post("/api/v1/chat", {"message": "hi", "conversation_id": conversation["id"]}, format="json")

    assert_error(response, 409, "conversation_bound")
    assert not Message.objects.exists()


def test_a_failing_connector_is_retried_then_failed_with_every_attempt_recorded(
    auth_api, user, settings, django_capture_on_commit_callbacks
):
    settings.HUB_MAX_ATTEMPTS = 3
    flaky = connect(user, settings={"failure_rate": 1.0})
    conversation = _bound_conversation(auth_api, flaky.account)

    with django_capture_on_commit_callbacks(execute=True):
        message_id = _post(auth_api, conversation["id"]).json()["message"]["id"]

    delivery = Delivery.objects.get()
    assert (delivery.state, delivery.attempts) == ("failed", 3)
    assert "gave up after 3 attempts" in delivery.last_error
    attempts = list(DeliveryAttempt.objects.filter(delivery=delivery).values_list("attempt", "outcome"))
    assert attempts == [(1, "retry"), (2, "retry"), (3, "failed")]
    assert all("HTTP 503" in e for e in DeliveryAttempt.objects.values_list("error", flat=True))
    assert Message.objects.get(pk=message_id).status == "failed"
    assert _history(message_id) == ["accepted", "queued", "failed"]


def test_backoff_doubles_with_jitter_and_a_cap(settings):
    settings.HUB_RETRY_BACKOFF_SECONDS = 2
    settings.HUB_RETRY_BACKOFF_MAX_SECONDS = 10

    samples = {attempt: [deliveries.retry_countdown(attempt) for _ in range(200)] for attempt in (1, 2, 3, 6)}

    assert all(1 <= s <= 2 for s in samples[1]) and all(2 <= s <= 4 for s in samples[2])
    assert all(4 <= s <= 8 for s in samples[3]) and all(5 <= s <= 10 for s in samples[6])
    assert len(set(samples[3])) > 100  # jittered, not one fixed delay


def test_a_text_over_the_platform_limit_fails_at_once(auth_api, instagram, django_capture_on_commit_callbacks):
    conversation = _bound_conversation(auth_api, instagram.account)

    with django_capture_on_commit_callbacks(execute=True):
        message_id = _post(auth_api, conversation["id"], content="x" * 1001).json()["message"]["id"]

    [attempt] = DeliveryAttempt.objects.all()
    assert attempt.outcome == "failed" and "1000 characters" in attempt.error
    assert Message.objects.get(pk=message_id).status == "failed"


def test_the_webhook_connector_posts_the_signed_message_to_a_real_server(
    auth_api, user, receiver, django_capture_on_commit_callbacks
):
    hook = connect(user, channel="webhook", external_id="crm-1", settings={"url": "http://127.0.0.1:1/"})
    receiver.secret = hook.secret
    hook.account.settings = {**hook.account.settings, "url": receiver.url}
    hook.account.save(update_fields=["settings"])
    receiver.answers = [503]  # the first try meets an outage: retried
    conversation = _bound_conversation(auth_api, hook.account, address="customer-42")

    with django_capture_on_commit_callbacks(execute=True):
        message_id = _post(auth_api, conversation["id"], content="Invoice ready").json()["message"]["id"]

    assert [r["valid"] for r in receiver.received] == [True, True]
    body = receiver.received[-1]["body"]
    assert body["event"] == "message"
    assert body["message"]["id"] == message_id and body["message"]["content"] == "Invoice ready"
    assert body["conversation"]["id"] == conversation["id"]
    assert body["contact"] == {"address": "customer-42", "name": "Grace"}
    delivery = Delivery.objects.get()
    assert {r["delivery"] for r in receiver.received} == {delivery.external_id}  # same id on the retry
    assert list(DeliveryAttempt.objects.values_list("outcome", flat=True)) == ["retry", "sent"]
    assert Message.objects.get(pk=message_id).status == "delivered"


def test_a_webhook_that_refuses_the_signature_fails_the_message(
    auth_api, user, receiver, django_capture_on_commit_callbacks
):
    receiver.secret = "not-the-accounts-secret"
    hook = connect(user, channel="webhook", external_id="crm-2", settings={"url": receiver.url})
    conversation = _bound_conversation(auth_api, hook.account)

    with django_capture_on_commit_callbacks(execute=True):
        message_id = _post(auth_api, conversation["id"]).json()["message"]["id"]

    assert [r["valid"] for r in receiver.received] == [False]
    assert Message.objects.get(pk=message_id).status == "failed"
    assert "HTTP 401" in DeliveryAttempt.objects.get().error


def test_statuses_never_go_backwards(api, auth_api, user, django_capture_on_commit_callbacks):
    account = connect(user)  # no report_read: the message stops at delivered
    conversation = _bound_conversation(auth_api, account.account)
    with django_capture_on_commit_callbacks(execute=True):
        message_id = _post(auth_api, conversation["id"]).json()["message"]["id"]
    delivery = Delivery.objects.get()

    def report(status):
        payload = platforms.whatsapp_statuses(
            phone_number_id=account.account.external_id,
            recipient="447700900001",
            message_id=delivery.external_id,
            status=status,
            timestamp=int(time.time()),
        )
        return signed_post(api, "whatsapp", payload, account.secret).json()["statuses"]

    moved = [report("read"), report("delivered"), report("sent"), report("failed"), report("read")]

    assert moved == [1, 0, 0, 0, 0]
    assert Message.objects.get(pk=message_id).status == "read"
    assert _history(message_id) == ["accepted", "queued", "sent", "delivered", "read"]


def test_status_moves_are_conditional(user):
    from tests.conversations.factories import ConversationFactory

    conversation = ConversationFactory(owner=user)
    message = Message.objects.create(
        tenant=user.tenant, conversation=conversation, seq=1, role="user", content="x", status="accepted"
    )

    results = [
        statuses.message_status_advance(message_id=message.pk, to=to)
        for to in ("sent", "queued", "failed", "delivered", "read")
    ]

    assert results == [True, False, True, False, False]
    assert statuses.message_status_advance(message_id=message.pk, to="queued", requeue=True) is True
    assert _history(message.pk) == ["sent", "failed", "queued"]


def test_a_redelivered_task_takes_over_its_own_claim_and_records_the_lost_attempt(
    auth_api, whatsapp, django_capture_on_commit_callbacks
):
    conversation = _bound_conversation(auth_api, whatsapp.account)
    with django_capture_on_commit_callbacks(execute=False):
        _post(auth_api, conversation["id"])
    delivery = Delivery.objects.get()
    claimed, ours = deliveries.delivery_claim(delivery_id=delivery.pk, claim="task-1")
    assert ours and claimed.state == "sending"

    other = deliveries.delivery_execute(delivery_id=delivery.pk, claim="task-2")  # another live execution
    with django_capture_on_commit_callbacks(execute=True):
        again = deliveries.delivery_execute(delivery_id=delivery.pk, claim="task-1")  # its worker died
    late = deliveries.delivery_execute(delivery_id=delivery.pk, claim="task-1")

    assert other.outcome == "not_ours" and again.outcome == "sent" and late.outcome == "not_ours"
    assert list(DeliveryAttempt.objects.values_list("attempt", "outcome")) == [(1, "lost"), (2, "sent")]


def test_the_sweep_resends_lapsed_and_unsent_deliveries(
    auth_api, whatsapp, settings, django_capture_on_commit_callbacks
):
    conversation = _bound_conversation(auth_api, whatsapp.account)
    with django_capture_on_commit_callbacks(execute=False):
        _post(auth_api, conversation["id"])
        _post(auth_api, conversation["id"], content="second")
    lapsed, unsent = Delivery.objects.order_by("pk")
    deliveries.delivery_claim(delivery_id=lapsed.pk, claim="dead-worker")
    Delivery.objects.filter(pk=unsent.pk).update(enqueue_failed_at=timezone.now())
    later = timezone.now() + dt.timedelta(seconds=settings.HUB_DELIVERY_LEASE_SECONDS + 1)

    with django_capture_on_commit_callbacks(execute=True):
        result = deliveries.deliveries_sweep(now=later)

    assert sorted(result["requeued"]) == [lapsed.pk, unsent.pk] and result["failed"] == []
    assert set(Delivery.objects.values_list("state", flat=True)) == {"sent"}
    assert list(DeliveryAttempt.objects.filter(delivery=lapsed).values_list("outcome", flat=True)) == ["lost", "sent"]


@pytest.fixture
def sent_batches(monkeypatch):
    """The broker side of the hand-over: what each publish carried (the worker is not run)."""
    from hub import queue

    batches = []
    monkeypatch.setattr(queue, "_many_sender", lambda ids: batches.append(list(ids)))
    monkeypatch.setattr(queue, "_sender", lambda delivery_id: batches.append([delivery_id]))
    return batches


def test_on_the_real_stack_committed_deliveries_are_handed_over_in_the_background_in_batches(
    auth_api, whatsapp, monkeypatch, sent_batches, django_capture_on_commit_callbacks
):
    # Celery not eager: the request answers once its rows are committed; the batcher then
    # moves every message to queued in one statement and publishes the batch at once.
    from config.core import background
    from hub import queue

    monkeypatch.setattr(queue, "_in_background", lambda: True)
    conversation = _bound_conversation(auth_api, whatsapp.account)
    held = []
    monkeypatch.setattr(deliveries._enqueue_batcher, "submit", held.append)  # the thread held back
    with django_capture_on_commit_callbacks(execute=True):
        first = _post(auth_api, conversation["id"], "one")
    with django_capture_on_commit_callbacks(execute=True):
        second = _post(auth_api, conversation["id"], "two")

    assert first.status_code == second.status_code == 202
    ids = [first.json()["message"]["id"], second.json()["message"]["id"]]
    assert [_history(pk) for pk in ids] == [["accepted"], ["accepted"]] and sent_batches == []

    deliveries._enqueue_batcher._handler(held)  # what the batcher's thread runs with them
    background.flush_all()

    delivery_ids = [Delivery.objects.get(message_id=pk).pk for pk in ids]
    assert sent_batches == [delivery_ids]
    assert [_history(pk) for pk in ids] == [["accepted", "queued"], ["accepted", "queued"]]
    assert set(Message.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"queued"}


def test_a_refused_batch_is_marked_for_the_sweep_and_never_raises(auth_api, whatsapp, monkeypatch):
    from hub import queue

    conversation = _bound_conversation(auth_api, whatsapp.account)
    monkeypatch.setattr(queue, "_sender", lambda delivery_id: None)  # the posts' own hand-over: dropped
    ids = [_post(auth_api, conversation["id"], text).json()["message"]["id"] for text in ("a", "b")]
    pending = [Delivery.objects.get(message_id=pk) for pk in ids]

    def refuse(_ids):
        raise ConnectionError("broker down")

    monkeypatch.setattr(queue, "_many_sender", refuse)
    Delivery.objects.filter(pk__in=[d.pk for d in pending]).update(state="pending", enqueue_failed_at=None)

    assert deliveries.deliveries_enqueue([(d.pk, d.message) for d in pending]) is False
    assert all(d.enqueue_failed_at is not None for d in Delivery.objects.filter(pk__in=[d.pk for d in pending]))


def test_a_batch_of_deliveries_is_one_hub_task_each_published_for_real(real_broker):
    # The batch's one publish (a Redis pipeline) on the real broker: a task per delivery, in
    # order, on the hub's queue (where the delivery worker listens), none on default.
    import json

    from hub.tasks import send_deliveries

    with real_broker.connection_for_write() as conn:
        conn.default_channel.queue_purge("hub")
    send_deliveries([701, 702, 703])

    with real_broker.connection_for_write() as conn:
        client = conn.default_channel.client
        raw = list(reversed(client.lrange("hub", 0, -1)))
        on_default = client.llen("default")
        conn.default_channel.queue_purge("hub")
    headers = [json.loads(message)["headers"] for message in raw]
    assert [(h["task"], h["argsrepr"]) for h in headers] == [
        ("hub.tasks.deliver_message", "(701,)"),
        ("hub.tasks.deliver_message", "(702,)"),
        ("hub.tasks.deliver_message", "(703,)"),
    ]
    assert on_default == 0
