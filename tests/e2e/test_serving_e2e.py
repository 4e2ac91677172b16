"""Issue 9, serving: daphne as a real process. It stops within a bound on SIGTERM whatever
is in flight, logs each request once (our JSON line, no access log of its own), keeps
tokens sent in query strings out of every log line, and serves the admin's static files."""

import json
import re
import signal
import subprocess
import threading
import time

import httpx
import pytest
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

from .conftest import BIN, ROOT, register

pytestmark = pytest.mark.timeout(120)

SHUTDOWN_BOUND = 15.0  # seconds a rolling deploy waits for the process after SIGTERM


def _burst(base_url: str, headers: dict, conversation_id: int) -> tuple[list[threading.Thread], list[str]]:
    """Starts concurrent requests in threads: slow sync chat turns and chat SSE streams (the
    model hangs), conversation event streams that stay open, and a stream of quick calls.
    Returns the threads and a list of what each one ended with."""
    outcomes: list[str] = []

    def run(name, call):
        try:
            call()
            outcomes.append(f"{name}: done")
        except httpx.HTTPError as exc:
            outcomes.append(f"{name}: {type(exc).__name__}")

    def client():
        return httpx.Client(base_url=base_url, headers=headers, timeout=60, trust_env=False)

    def sync_turn():
        with client() as http:
            http.post("/api/v1/chat", json={"message": "slow one"})

    def streamed_turn():
        with client() as http, http.stream("POST", "/api/v1/chat/stream", json={"message": "slow stream"}) as r:
            for _ in r.iter_bytes():
                pass

    def events():
        with client() as http, http.stream("GET", f"/api/v1/conversations/{conversation_id}/events") as r:
            for _ in r.iter_bytes():
                pass

    def quick_calls():
        with client() as http:
            for _ in range(200):
                http.get("/api/v1/auth/me")
                http.get("/api/v1/conversations/")

    calls = [("sync_turn", sync_turn)] * 6 + [("streamed_turn", streamed_turn)] * 4
    calls += [("events", events)] * 4 + [("quick_calls", quick_calls)] * 4
    threads = [threading.Thread(target=run, args=call, daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    return threads, outcomes


def test_sigterm_mid_burst_exits_within_the_bound(stack):
    # Arrange: daphne alone (nothing here needs the worker), the model hangs on every turn.
    daphne = stack.start_daphne()
    account = register(stack)
    conversation = httpx.post(
        f"{stack.base_url}/api/v1/conversations/",
        json={"title": "burst"},
        headers=account["headers"],
        timeout=10,
        trust_env=False,
    ).json()
    for _ in range(20):
        stack.fake.hang(60)
    threads, outcomes = _burst(stack.base_url, account["headers"], conversation["id"])
    # Let slow turns reach the model (each holds one of the 4 pooled database connections,
    # so the rest queue for one) while the quick calls keep the server busy.
    deadline = time.monotonic() + 10
    while len(stack.fake.requests) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(stack.fake.requests) >= 4, "the slow turns never reached the model"
    time.sleep(0.5)  # not timing: lets the quick calls pile up behind them

    # Act
    signalled = time.monotonic()
    daphne.popen.send_signal(signal.SIGTERM)
    daphne.wait(SHUTDOWN_BOUND + 5)
    took = time.monotonic() - signalled
    print(f"daphne exited {took:.1f}s after SIGTERM with status {daphne.popen.returncode}")

    # Assert
    if daphne.alive():
        daphne.fail_with_log(f"still running {took:.1f}s after SIGTERM (in flight: {len(threads)} requests)")
    assert took <= SHUTDOWN_BOUND, f"exited only after {took:.1f}s"
    for thread in threads:
        thread.join(10)
    assert len(outcomes) == len(threads), "a client kept waiting on a server that is gone"


def _log_lines(proc) -> list[str]:
    return [line for line in proc.log().splitlines() if line.strip()]


def test_each_request_is_logged_once_as_json_and_query_tokens_never_reach_a_log_line(stack):
    # Arrange
    daphne = stack.start_daphne()
    account = register(stack)
    secret = account["access"]
    forged = "forged-token-" + "x" * 40
    http = httpx.Client(base_url=stack.base_url, timeout=10, trust_env=False)
    conversation = http.post("/api/v1/conversations/", json={"title": "logs"}, headers=account["headers"]).json()
    events_path = f"/api/v1/conversations/{conversation['id']}/events"

    # Act: a token in the query string on SSE (accepted and refused) and on WebSocket.
    with http.stream("GET", f"{events_path}?token={secret}", headers={"X-Request-ID": "sse-with-token"}) as stream:
        assert stream.status_code == 200
        next(stream.iter_lines())  # the opening comment: the stream is live
    refused = http.get(f"{events_path}?token={forged}", headers={"X-Request-ID": "sse-forged-token"})
    assert refused.status_code == 401
    ws_base = stack.base_url.replace("http", "ws", 1)
    with ws_connect(f"{ws_base}/ws/v1/conversations/{conversation['id']}/?token={secret}", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "ping"}))
        ws.recv(timeout=10)
    with pytest.raises(WebSocketException):  # refused at connect: close 4401
        with ws_connect(f"{ws_base}/ws/v1/conversations/{conversation['id']}/?token={forged}", open_timeout=10) as ws:
            ws.recv(timeout=10)
    health = http.get("/health?token=" + forged, headers={"X-Request-ID": "health-once"})
    assert health.status_code == 200
    http.close()
    # The SSE request's log line is written when daphne notices the client left.
    time.sleep(0.1)
    lines = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lines = _log_lines(daphne)
        if any('"sse-with-token"' in line and '"request"' in line for line in lines):
            break
        time.sleep(0.2)

    # Assert: no token anywhere, no plain access-log line, one JSON line a request.
    log = "\n".join(lines)
    assert secret not in log
    assert forged not in log
    access_lines = [line for line in lines if re.search(r'"(GET|POST) /|WSCONNECT|WSDISCONNECT|WSREJECT', line)]
    assert not access_lines
    records = [json.loads(line) for line in lines if line.startswith("{")]
    requests = [r for r in records if r.get("message") == "request"]
    ids = [r["request_id"] for r in requests]
    assert ids.count("health-once") == 1
    assert ids.count("sse-forged-token") == 1
    (health_line,) = [r for r in requests if r["request_id"] == "health-once"]
    assert (health_line["path"], health_line["route"], health_line["status"]) == ("/health", "/health", 200)


def test_admin_static_files_are_served_by_daphne(stack, tmp_path):
    # Arrange: collectstatic into a folder of the test's own.
    stack.env["STATIC_ROOT"] = str(tmp_path / "static")
    subprocess.run(
        [str(BIN / "python"), "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=stack.env,
        check=True,
        timeout=60,
    )
    stack.start_daphne()

    # Act
    response = httpx.get(f"{stack.base_url}/static/admin/css/base.css", timeout=10, trust_env=False)
    missing = httpx.get(f"{stack.base_url}/static/admin/css/nope.css", timeout=10, trust_env=False)

    # Assert
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert b"body" in response.content
    assert missing.status_code == 404
