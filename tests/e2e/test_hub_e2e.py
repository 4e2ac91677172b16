"""Issue 12 end to end: daphne and a Celery worker as real processes on PostgreSQL and
Redis. A message to a WhatsApp contact goes API -> broker -> worker -> simulator, whose
signed status reports come back over HTTP to daphne's inbound webhook, and every status
reaches a WebSocket listener; a worker killed mid-send redelivers the message once."""

import json
import os
import re
import signal
import time

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from conversations.models import Message
from hub.models import Delivery, DeliveryAttempt, MessageStatusChange

from .conftest import register, wait_for

pytestmark = pytest.mark.timeout(120)

DEADLINE = 20.0


@pytest.fixture
def hub_server(stack):
    """daphne, then a worker whose simulators report to that daphne over HTTP."""
    daphne = stack.spawn_daphne()
    stack.env["HUB_WEBHOOK_BASE_URL"] = stack.base_url
    worker = stack.spawn_worker()
    stack.wait_daphne(daphne)
    stack.wait_worker(worker)
    return stack


def _setup(server, settings: dict):
    account = register(server)
    http = httpx.Client(base_url=server.base_url, headers=account["headers"], timeout=10, trust_env=False)
    created = http.post(
        "/api/v1/channel-accounts/",
        json={"channel": "whatsapp", "name": "Support", "external_id": "15550009999", "settings": settings},
    )
    assert created.status_code == 201, created.text
    conversation = http.post(
        "/api/v1/conversations/",
        json={"channel_account_id": created.json()["id"], "contact": {"address": "447700900123", "name": "Ada"}},
    )
    assert conversation.status_code == 201, conversation.text
    return account, http, conversation.json()["id"]


def test_a_whatsapp_message_is_delivered_within_5s_and_read_through_the_signed_webhook(hub_server):
    account, http, conversation_id = _setup(hub_server, {"latency_ms": 50, "report_read": True})
    ws_url = (
        f"{hub_server.base_url.replace('http', 'ws')}/ws/v1/conversations/{conversation_id}/?token={account['access']}"
    )

    with ws_connect(ws_url, open_timeout=10, proxy=None) as ws:
        ws.send(json.dumps({"type": "ping", "ref": "p"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "pong"  # subscribed
        posted_at = time.monotonic()
        response = http.post(f"/api/v1/conversations/{conversation_id}/messages", json={"content": "Shipped!"})
        accepted_in = time.monotonic() - posted_at
        assert response.status_code == 202, response.text
        message_id = response.json()["message"]["id"]
        seen: dict[str, float] = {}
        deadline = time.monotonic() + DEADLINE
        while "read" not in seen and time.monotonic() < deadline:
            try:
                frame = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            except TimeoutError:
                break
            if frame["type"] == "message.status" and frame["data"]["message_id"] == message_id:
                seen.setdefault(frame["data"]["status"], time.monotonic() - posted_at)

    assert response.json()["message"]["status"] == "accepted"
    assert list(seen) == ["queued", "sent", "delivered", "read"], (seen, accepted_in)
    assert Message.objects.get(pk=message_id).status == "read"
    changes = dict(MessageStatusChange.objects.filter(message_id=message_id).values_list("status", "at"))
    assert list(changes) == ["accepted", "queued", "sent", "delivered", "read"]
    # Accepted to delivered on the server's clock (the client's own wait for the 202 is the
    # acceptance latency, measured by bench/hub_delivery.py, not asserted here).
    assert (changes["delivered"] - changes["accepted"]).total_seconds() < 5.0, changes
    # The statuses came back as the platform sends them: signed POSTs to daphne's webhook.
    # (The request's log line is written after its response, so it may trail the event.)
    wait_for(
        lambda: hub_server.procs[0].log().count("/api/v1/channels/whatsapp/webhook") >= 2,
        timeout=10,
        what="daphne's log lines of the two signed status webhooks",
    )


def test_a_delivery_worker_killed_mid_send_is_redelivered_once(hub_server):
    _account, http, conversation_id = _setup(hub_server, {"latency_ms": 4000})
    worker = hub_server.worker()
    response = http.post(f"/api/v1/conversations/{conversation_id}/messages", json={"content": "Hold on"})
    message_id = response.json()["message"]["id"]
    wait_for(
        lambda: Delivery.objects.filter(message_id=message_id, state="sending").exists(),
        timeout=DEADLINE,
        what="the worker to be sending",
    )
    [child] = worker.children()

    os.kill(child, signal.SIGKILL)

    wait_for(lambda: Message.objects.get(pk=message_id).status == "delivered", timeout=DEADLINE, what="the redelivery")
    delivery = Delivery.objects.get(message_id=message_id)
    assert (delivery.state, delivery.attempts) == ("sent", 2)
    attempts = list(DeliveryAttempt.objects.filter(delivery=delivery).values_list("attempt", "outcome"))
    assert attempts == [(1, "lost"), (2, "sent")]  # sent once
    history = list(MessageStatusChange.objects.filter(message_id=message_id).values_list("status", flat=True))
    assert history == ["accepted", "queued", "sent", "delivered"]
    log = worker.log()
    [task_id] = set(re.findall(r"deliver_message\[([0-9a-f-]+)\] received", log))
    assert log.count(f"deliver_message[{task_id}] received") == 2  # the same message, redelivered once
    assert worker.alive() and "WorkerLostError" in log
