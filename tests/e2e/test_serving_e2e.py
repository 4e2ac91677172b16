"""Issue 9, serving, and issue 11, several web processes: the production server (gunicorn
with uvicorn workers, `make run` / `make serve`) and daphne (still what `runserver` and the
other end-to-end tests use) as real processes. Each stops within a bound on SIGTERM whatever
is in flight, logs each request once (our JSON line, no access log of its own), keeps
tokens sent in query strings out of every log line, and serves the admin's static files.
With WEB_CONCURRENCY=2 both worker processes serve HTTP, SSE and WebSocket, and SIGTERM
stops them all."""

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time

import httpx
import pytest
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

from .conftest import BIN, ROOT, _free_port, register, wait_for

pytestmark = pytest.mark.timeout(120)

SHUTDOWN_BOUND = 15.0  # seconds a rolling deploy waits for the process after SIGTERM
SERVERS = ["gunicorn", "daphne"]


def spawn_gunicorn(stack, *, workers: int = 1):
    """The production command (`make serve`) on a free port; returns the master process."""
    port = _free_port()
    stack.env["WEB_CONCURRENCY"] = str(workers)
    proc = stack._spawn(
        "gunicorn",
        [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", "-b", f"127.0.0.1:{port}", "config.asgi:application"],
    )
    stack.base_url = f"http://127.0.0.1:{port}"
    return proc


def start_server(stack, kind: str, *, workers: int = 1):
    if kind == "daphne":
        return stack.start_daphne()
    proc = stack.wait_daphne(spawn_gunicorn(stack, workers=workers))  # waits for GET /health
    wait_for(lambda: len(proc.children()) == workers, timeout=30, what=f"{workers} gunicorn workers")
    return proc


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


@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_mid_burst_exits_within_the_bound(stack, server):
    # Arrange: the server alone (nothing here needs the worker), the model hangs on every turn.
    proc = start_server(stack, server)
    workers = proc.children() if server == "gunicorn" else []
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
    proc.popen.send_signal(signal.SIGTERM)
    proc.wait(SHUTDOWN_BOUND + 5)
    took = time.monotonic() - signalled
    print(f"{server} exited {took:.1f}s after SIGTERM with status {proc.popen.returncode}")

    # Assert
    if proc.alive():
        proc.fail_with_log(f"still running {took:.1f}s after SIGTERM (in flight: {len(threads)} requests)")
    assert took <= SHUTDOWN_BOUND, f"exited only after {took:.1f}s"
    assert not [pid for pid in workers if _alive(pid)], "a gunicorn worker outlived its master"
    for thread in threads:
        thread.join(10)
    assert len(outcomes) == len(threads), "a client kept waiting on a server that is gone"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by a parent that is gone too) is not running.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _log_lines(proc) -> list[str]:
    return [line for line in proc.log().splitlines() if line.strip()]


@pytest.mark.parametrize("server", SERVERS)
def test_each_request_is_logged_once_as_json_and_query_tokens_never_reach_a_log_line(stack, server):
    # Arrange
    proc = start_server(stack, server)
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
    # The SSE request's log line is written when the server notices the client left.
    time.sleep(0.1)
    lines = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lines = _log_lines(proc)
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


@pytest.mark.parametrize("server", SERVERS)
def test_admin_static_files_are_served(stack, tmp_path, server):
    # Arrange: collectstatic into a folder of the test's own.
    stack.env["STATIC_ROOT"] = str(tmp_path / "static")
    subprocess.run(
        [str(BIN / "python"), "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=stack.env,
        check=True,
        timeout=60,
    )
    start_server(stack, server)

    # Act
    response = httpx.get(f"{stack.base_url}/static/admin/css/base.css", timeout=10, trust_env=False)
    missing = httpx.get(f"{stack.base_url}/static/admin/css/nope.css", timeout=10, trust_env=False)

    # Assert
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert b"body" in response.content
    assert missing.status_code == 404


def _sockets_on_port(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` process ``pid`` holds (from /proc:
    the inodes of /proc/net/tcp rows with that local port, against the process's fds)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            held += 1
    return held


def test_two_web_processes_serve_http_sse_and_websocket_and_sigterm_stops_them_all(stack):
    # Arrange: WEB_CONCURRENCY=2 as `WEB_CONCURRENCY=2 make run` (the Redis channel layer
    # carries events between the processes).
    master = start_server(stack, "gunicorn", workers=2)
    workers = master.children()
    commands = [open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode() for pid in workers]
    assert len(workers) == 2 and all("gunicorn" in command for command in commands), commands
    port = int(stack.base_url.rsplit(":", 1)[1])
    account = register(stack)
    http = httpx.Client(base_url=stack.base_url, headers=account["headers"], timeout=10, trust_env=False)
    conversation = http.post("/api/v1/conversations/", json={"title": "two processes"}).json()
    ws_url = f"{stack.base_url.replace('http', 'ws', 1)}/ws/v1/conversations/{conversation['id']}/"

    # Act 1: many requests, each on a connection of its own.
    statuses = [
        httpx.get(
            f"{stack.base_url}/api/v1/auth/me",
            headers={**account["headers"], "Connection": "close"},
            timeout=10,
            trust_env=False,
        ).status_code
        for _ in range(60)
    ]
    # Act 2: WebSocket listeners opened together until each process holds some (the kernel
    # hands each connection to whichever process accepts first), token in the subprotocol.
    listeners = []
    sockets, sockets_lock = contextlib.ExitStack(), threading.Lock()

    def open_listener(_):
        connecting = ws_connect(ws_url, subprotocols=["bearer", account["access"]], open_timeout=10)
        with sockets_lock:
            ws = sockets.enter_context(connecting)
        ws.send(json.dumps({"type": "ping", "ref": "ready"}))
        while json.loads(ws.recv(timeout=10))["type"] != "pong":
            pass  # subscribed once the consumer answers
        return ws

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(20) as pool:
        for _ in range(5):
            listeners += list(pool.map(open_listener, range(20)))
            held = [_sockets_on_port(pid, port) for pid in workers]
            if all(held):
                break
    assert listeners[0].subprotocol == "bearer"
    # Act 3: an SSE listener, then one message posted over REST.
    with http.stream("GET", f"/api/v1/conversations/{conversation['id']}/events") as sse:
        assert sse.status_code == 200
        lines = sse.iter_lines()
        next(lines)  # the opening comment: the stream is live
        posted = http.post(f"/api/v1/conversations/{conversation['id']}/messages/", json={"content": "to everyone"})
        assert posted.status_code == 202, posted.text
        message_id = (posted.json().get("message") or posted.json())["id"]
        sse_events = []
        deadline = time.monotonic() + 10
        for line in lines:  # the stream sends a heartbeat comment every 2 s
            if line.startswith("data:"):
                sse_events.append(json.loads(line[5:]))
            if any(e["type"] == "message.created" and e["data"]["id"] == message_id for e in sse_events):
                break
            if time.monotonic() > deadline:
                break
    received = 0
    for ws in listeners:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = json.loads(ws.recv(timeout=10))
            if frame["type"] == "message.created" and frame["data"]["id"] == message_id:
                received += 1
                break

    # Act 4: SIGTERM to the master, as a deploy stops it.
    signalled = time.monotonic()
    master.popen.send_signal(signal.SIGTERM)
    master.wait(SHUTDOWN_BOUND + 5)
    took = time.monotonic() - signalled
    closed = 0
    for ws in listeners:
        try:
            while True:
                ws.recv(timeout=5)
        except WebSocketException:
            closed += 1
        except TimeoutError:
            pass
    http.close()
    sockets.close()

    # Assert
    assert statuses == [200] * 60
    assert all(held), f"established connections per worker: {held}"
    assert received == len(listeners), f"{received} of {len(listeners)} WebSocket listeners heard the message"
    assert any(e["type"] == "message.created" and e["data"]["id"] == message_id for e in sse_events), sse_events
    if master.alive():
        master.fail_with_log(f"still running {took:.1f}s after SIGTERM")
    assert master.popen.returncode == 0
    assert took <= SHUTDOWN_BOUND, f"stopped only after {took:.1f}s"
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived its master"
    assert closed == len(listeners), f"{len(listeners) - closed} WebSockets still open after the stop"


@pytest.mark.parametrize(("trusted", "expected_ip"), [("", "127.0.0.1"), ("127.0.0.1", "203.0.113.7")])
def test_forwarded_for_is_trusted_only_from_the_proxies_named_in_forwarded_allow_ips(stack, trusted, expected_ip):
    # Arrange: the production server, with or without a proxy named.
    stack.env["FORWARDED_ALLOW_IPS"] = trusted
    start_server(stack, "gunicorn")
    account = register(stack)

    # Act: an audited action whose request claims another client address.
    created = httpx.post(
        f"{stack.base_url}/api/v1/conversations/",
        json={"title": "from afar"},
        headers={**account["headers"], "X-Forwarded-For": "203.0.113.7"},
        timeout=10,
        trust_env=False,
    )
    trail = httpx.get(
        f"{stack.base_url}/api/v1/audits/?action=conversation.created",
        headers=account["headers"],
        timeout=10,
        trust_env=False,
    )

    # Assert: the audit record's ip is the socket's unless the proxy is trusted.
    assert created.status_code == 201, created.text
    assert trail.status_code == 200, trail.text
    (record,) = [r for r in trail.json()["results"] if r["resource_id"] == str(created.json()["id"])]
    assert record["ip"] == expected_ip
