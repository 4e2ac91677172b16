"""What a delivery costs (docs/benchmarks.md "hub"): its own Celery queue, the statements
of the worker's claim/settle and of a status webhook (pinned: change them honestly), one
HTTP client per process, and simulator reports that do not hold the delivery's slot."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from config.celery import app
from hub import http, platforms, queue
from hub.models import Delivery, MessageStatusChange
from hub.secrets import SIGNATURE_HEADER, signature_for
from hub.services import deliveries, inbound

from .conftest import signed_post
from .test_delivery import _bound_conversation, _history, _post

pytestmark = pytest.mark.django_db


def test_deliveries_go_to_the_hub_queue_and_other_tasks_stay_on_default(settings):
    router = app.amqp.router
    assert settings.HUB_DELIVERY_QUEUE == "hub"
    assert router.route({}, "hub.tasks.deliver_message")["queue"].name == "hub"
    assert router.route({}, "hub.tasks.sweep_deliveries")["queue"].name == "default"
    assert router.route({}, "chat.tasks.run_agent_turn")["queue"].name == "default"


def _pending_deliveries(auth_api, account, django_capture_on_commit_callbacks, count=1):
    conversation = _bound_conversation(auth_api, account)
    pending = []
    for _ in range(count):
        with django_capture_on_commit_callbacks(execute=False):
            message_id = _post(auth_api, conversation["id"]).json()["message"]["id"]
        assert _history(message_id) == ["accepted"]
        pending.append(Delivery.objects.get(message_id=message_id))
    return pending


def _pending_delivery(auth_api, account, django_capture_on_commit_callbacks):
    return _pending_deliveries(auth_api, account, django_capture_on_commit_callbacks)[0]


def test_a_pending_delivery_is_claimed_sent_and_settled_in_pinned_statements(
    real_stack, auth_api, whatsapp, django_capture_on_commit_callbacks, django_assert_num_queries, monkeypatch
):
    delivery = _pending_delivery(auth_api, whatsapp.account, django_capture_on_commit_callbacks)
    from hub.connectors.base import connector_for

    monkeypatch.setattr(connector_for("whatsapp"), "after_sent", lambda outbound: None)
    # Claim: the conditional UPDATE out of pending, one SELECT of everything the send needs
    # (delivery, account, contact, message, conversation), the message's own queued move
    # (its after-commit hand-over did not run here: one statement, UPDATE … RETURNING and
    # the status row's INSERT); settle, in one transaction (SAVEPOINT/RELEASE inside the
    # test's): the conditional UPDATE still holding the claim, the attempt, the message's
    # sent move (one statement).
    with django_assert_num_queries(8):
        result = deliveries.delivery_execute(delivery_id=delivery.pk, claim="task-1")
    assert result.outcome == "sent"
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.claimed_by) == ("sent", 1, "")
    assert _history(delivery.message_id) == ["accepted", "queued", "sent"]
    # A second execution of the same task finds it settled: one locked read.
    assert deliveries.delivery_execute(delivery_id=delivery.pk, claim="task-1").outcome == "not_ours"


def test_the_hubs_share_of_a_post_is_three_statements(
    real_stack, auth_api, whatsapp, django_capture_on_commit_callbacks, monkeypatch
):
    conversation = _bound_conversation(auth_api, whatsapp.account)
    handed = []  # the broker, at its boundary: what the worker would get
    monkeypatch.setattr(queue, "_sender", handed.append)
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        response = _post(auth_api, conversation["id"])
    assert response.status_code == 202
    assert response.json()["message"]["status"] == "accepted"

    hub = [q["sql"] for q in queries.captured_queries if '"hub_' in q["sql"] or " hub_" in q["sql"]]
    # The binding (with its account and contact); the delivery and the message's accepted
    # row in one statement; after commit the queued move (UPDATE … RETURNING + its row).
    assert len(hub) == 3, hub
    assert hub[0].startswith("SELECT") and "hub_conversationbinding" in hub[0]
    assert hub[1].startswith("WITH inserted AS (INSERT INTO") and "hub_delivery" in hub[1]
    assert hub[2].startswith("WITH moved AS (UPDATE")
    assert _history(response.json()["message"]["id"]) == ["accepted", "queued"]
    assert handed == [Delivery.objects.get(message_id=response.json()["message"]["id"]).pk]


def test_a_claim_out_of_pending_is_won_once(auth_api, whatsapp, django_capture_on_commit_callbacks):
    delivery = _pending_delivery(auth_api, whatsapp.account, django_capture_on_commit_callbacks)
    first, ours = deliveries.delivery_claim(delivery_id=delivery.pk, claim="task-1")
    second, also_ours = deliveries.delivery_claim(delivery_id=delivery.pk, claim="task-2")
    assert ours and not also_ours
    assert (first.state, first.claimed_by, first.attempts) == ("sending", "task-1", 1)
    assert first.message.pk == delivery.message_id and first.contact.address  # loaded with the claim
    assert Delivery.objects.get(pk=delivery.pk).claimed_by == "task-1"


def _delivered_report(account, delivery):
    return platforms.whatsapp_statuses(
        phone_number_id=account.external_id,
        recipient="447700900001",
        message_id=delivery.external_id,
        status="delivered",
        timestamp=int(time.time()),
    )


def test_a_status_webhook_is_one_statement_once_its_account_is_known(
    real_stack, api, auth_api, whatsapp, django_capture_on_commit_callbacks, django_assert_num_queries
):
    first, second = _pending_deliveries(auth_api, whatsapp.account, django_capture_on_commit_callbacks, 2)
    inbound.webhook_keys.clear()
    # The account (with its creator and tenant), then the move: one statement (the
    # messages named through their deliveries' platform ids, UPDATE … RETURNING, the
    # status rows' INSERT), no transaction of its own.
    with django_assert_num_queries(2), django_capture_on_commit_callbacks(execute=True) as published:
        response = signed_post(api, "whatsapp", _delivered_report(whatsapp.account, first), whatsapp.secret)
    assert response.status_code == 200, response.content
    assert response.json() == {"messages": 0, "duplicates": 0, "statuses": 1}
    assert _history(first.message_id) == ["accepted", "delivered"]
    assert len(published) == 1  # the message.status event, after commit
    # The account's id and secret are kept (HUB_WEBHOOK_ACCOUNT_CACHE_SECONDS): the next
    # report of that account is verified without a query and is the one statement.
    with django_assert_num_queries(1):
        response = signed_post(api, "whatsapp", _delivered_report(whatsapp.account, second), whatsapp.secret)
    assert response.json()["statuses"] == 1
    assert _history(second.message_id) == ["accepted", "delivered"]


def test_a_batch_of_reports_of_one_status_is_one_statement(
    real_stack, api, auth_api, whatsapp, django_capture_on_commit_callbacks, django_assert_num_queries
):
    pending = _pending_deliveries(auth_api, whatsapp.account, django_capture_on_commit_callbacks, 3)
    payload = platforms.whatsapp_statuses_batch(
        phone_number_id=whatsapp.account.external_id,
        reports=[(d.external_id, "447700900001", "delivered", int(time.time())) for d in pending],
    )
    signed_post(api, "whatsapp", _delivered_report(whatsapp.account, pending[0]), whatsapp.secret)  # account known

    with django_assert_num_queries(1):
        response = signed_post(api, "whatsapp", payload, whatsapp.secret)

    assert response.json()["statuses"] == 2  # the first was delivered already
    assert [_history(d.message_id) for d in pending] == [["accepted", "delivered"]] * 3


def test_one_http_client_per_process(monkeypatch):
    client = http.http_client()
    assert http.http_client() is client
    monkeypatch.setattr(http.os, "getpid", lambda: -1)  # as in a forked child
    child = http.http_client()
    assert child is not client and http.http_client() is child


class _SlowWebhook:
    """Our own webhook as a busy web process answers it: after ``delay`` seconds."""

    def __init__(self, delay: float):
        self.received: list[tuple[dict, bool]] = []
        self.secret = ""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(delay)
                outer.received.append(
                    (json.loads(body), self.headers.get(SIGNATURE_HEADER) == signature_for(body, outer.secret))
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def test_simulator_reports_over_http_do_not_hold_the_delivery(
    auth_api, whatsapp, settings, django_capture_on_commit_callbacks
):
    webhook = _SlowWebhook(delay=1.5)
    webhook.secret = whatsapp.secret
    try:
        settings.HUB_WEBHOOK_BASE_URL = webhook.base_url
        delivery = _pending_delivery(auth_api, whatsapp.account, django_capture_on_commit_callbacks)
        started = time.monotonic()
        result = deliveries.delivery_execute(delivery_id=delivery.pk, claim="task-1")
        took = time.monotonic() - started

        assert result.outcome == "sent" and took < 1.0, took  # not waiting on the report
        deadline = time.monotonic() + 10
        while len(webhook.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        # delivered, then read (report_read), each signed with the account's secret.
        reports = [
            (body["entry"][0]["changes"][0]["value"]["statuses"][0]["status"], ok) for body, ok in webhook.received
        ]
        assert reports == [("delivered", True), ("read", True)]
        assert MessageStatusChange.objects.filter(message_id=delivery.message_id, status="sent").exists()
    finally:
        webhook.server.shutdown()
        webhook.server.server_close()


def test_an_accounts_reports_waiting_behind_its_post_go_together_in_order(
    auth_api, whatsapp, settings, django_capture_on_commit_callbacks
):
    webhook = _SlowWebhook(delay=0.5)
    webhook.secret = whatsapp.secret
    try:
        settings.HUB_WEBHOOK_BASE_URL = webhook.base_url
        pending = _pending_deliveries(auth_api, whatsapp.account, django_capture_on_commit_callbacks, 3)
        for delivery in pending:  # each sent while the first report is on its way
            assert deliveries.delivery_execute(delivery_id=delivery.pk, claim=f"task-{delivery.pk}").outcome == "sent"
        deadline = time.monotonic() + 10
        while sum(len(_statuses(body)) for body, _ in webhook.received) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)

        posts = [[(s["id"], s["status"]) for s in _statuses(body)] for body, ok in webhook.received if ok]
        assert len(posts) == len(webhook.received)  # every one signed with the account's secret
        reports = [report for post in posts for report in post]
        ids = [d.external_id for d in pending]
        # Each message reported delivered, then read (report_read), once each...
        assert sorted(reports) == sorted([(i, "delivered") for i in ids] + [(i, "read") for i in ids])
        for i in ids:
            assert reports.index((i, "delivered")) < reports.index((i, "read"))
        # ...in fewer webhooks than reports: the ones waiting behind a POST went together.
        assert posts[0] == [(ids[0], "delivered")] and len(posts) < 6
    finally:
        webhook.server.shutdown()
        webhook.server.server_close()


def _statuses(body: dict) -> list[dict]:
    return [s for entry in body["entry"] for change in entry["changes"] for s in change["value"].get("statuses", [])]


def test_the_report_batcher_sends_at_once_when_idle_and_batches_behind_a_post():
    calls, release, started = [], threading.Event(), threading.Event()

    def post(key, items):
        calls.append((key, list(items)))
        started.set()
        if len(calls) == 1:
            release.wait(5)
        if items == ["boom"]:
            raise RuntimeError("the webhook is down")
        return [f"{item}+read" for item in items if not item.endswith("+read")]

    threads = []

    def submit(fn, *args):
        thread = threading.Thread(target=fn, args=args)
        threads.append(thread)
        thread.start()

    batcher = http.ReportBatcher(post, submit=submit, max_batch=2)
    batcher.add("a", ["a1"])
    assert started.wait(5)  # idle: at once, alone
    batcher.add("a", ["a2"])
    batcher.add("a", ["a3"])
    batcher.add("a", ["a4"])
    batcher.add("b", ["b1"])  # another account does not wait for a's POST
    deadline = time.monotonic() + 5
    while ("b", ["b1"]) not in calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ("b", ["b1"]) in calls
    release.set()
    for thread in threads:
        thread.join(5)

    a_calls = [items for key, items in calls if key == "a"]
    # One in flight per account, at most max_batch a POST, follow-ups queued behind.
    assert a_calls == [["a1"], ["a2", "a3"], ["a4", "a1+read"], ["a2+read", "a3+read"], ["a4+read"]]
    # A failed POST loses that batch only; the account is not left waiting.
    batcher.add("c", ["boom"])
    for thread in list(threads):
        thread.join(5)
    batcher.add("c", ["c2"])
    for thread in list(threads):
        thread.join(5)
    assert [items for key, items in calls if key == "c"] == [["boom"], ["c2"], ["c2+read"]]
