"""Issue 4 end to end: daphne and a Celery worker as real processes on PostgreSQL and
Redis, a client speaking HTTP, SSE and WebSocket over real sockets, and the model a fake
OpenAI-compatible server. The in-process behaviour is pinned in tests/chat/test_realtime.py;
these prove the processes really hand the work to each other."""

import json
import os
import re
import signal
import time

import httpx
import pytest
from httpx_sse import connect_sse
from websockets.sync.client import connect as ws_connect

from chat.models import AgentRun, Task
from conversations.models import Message

from .conftest import register, wait_for

pytestmark = pytest.mark.timeout(90)

DEADLINE = 20.0  # seconds any one exchange may take before the test fails


def _client(server, account) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers=account["headers"], timeout=10, trust_env=False)


def _new_conversation(http: httpx.Client) -> int:
    response = http.post("/api/v1/conversations/", json={"title": "e2e"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _post_message(http: httpx.Client, conversation_id: int, content: str, request_id: str | None = None) -> dict:
    headers = {"X-Request-ID": request_id} if request_id else {}
    response = http.post(
        f"/api/v1/conversations/{conversation_id}/messages", json={"content": content}, headers=headers
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["run"]["status"] == "queued"
    return body


def _ws_frames_until(ws, predicate, *, timeout: float = DEADLINE) -> list[dict]:
    deadline = time.monotonic() + timeout
    frames: list[dict] = []
    while not frames or not predicate(frames[-1]):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no matching WebSocket frame within {timeout:.0f}s; got {[f['type'] for f in frames]}")
        try:
            frames.append(json.loads(ws.recv(timeout=remaining)))
        except TimeoutError:
            continue
    return frames


def _sse_until(events, predicate, *, timeout: float = DEADLINE) -> list[dict]:
    """Frames from ``events`` (one ``iter_sse()`` iterator, read on across calls) until
    ``predicate(last frame)``. The server's heartbeat comments make httpx-sse yield empty
    events, so the deadline is checked while the stream is idle too."""
    deadline = time.monotonic() + timeout
    frames: list[dict] = []
    for sse in events:
        if sse.data:
            frame = json.loads(sse.data)
            assert sse.event == frame["type"]
            assert sse.id == (str(frame["seq"]) if frame["seq"] is not None else sse.id)
            frames.append(frame)
            if predicate(frame):
                return frames
        if time.monotonic() > deadline:
            break
    pytest.fail(f"SSE stream ended or stalled after {[f['type'] for f in frames]}")


def _is(kind: str):
    return lambda frame: frame["type"] == kind


def _run(run_id: int) -> AgentRun:
    return AgentRun.objects.select_related("reply_message").get(pk=run_id)


def _settled(run_id: int):
    run = _run(run_id)
    return run if run.status in (AgentRun.Status.COMPLETED, AgentRun.Status.FAILED) else None


# ---------------------------------------------------------------- 202 path over WebSocket


def test_message_posted_over_http_is_answered_by_the_worker_over_websocket(server, account):
    server.fake.reply("Hello from the worker process")
    http = _client(server, account)
    conversation_id = _new_conversation(http)
    ws_url = (
        f"{server.base_url.replace('http', 'ws', 1)}/ws/v1/conversations/{conversation_id}/?token={account['access']}"
    )

    with ws_connect(ws_url, open_timeout=10, proxy=None) as ws:
        # The consumer subscribes in connect(); the pong proves that has finished.
        ws.send(json.dumps({"type": "ping", "ref": "p1"}))
        assert _ws_frames_until(ws, _is("pong"))[-1]["data"]["ref"] == "p1"

        accepted = _post_message(http, conversation_id, "say hello", request_id="e2e-request-1")
        frames = _ws_frames_until(ws, lambda f: f["type"] in ("run.completed", "run.failed"))

    run_id = accepted["run"]["id"]
    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["message.created", "run.started"], kinds
    assert kinds[-2:] == ["message.completed", "run.completed"], kinds
    assert set(kinds[2:-2]) == {"message.delta"}, kinds
    created, completed = frames[0], frames[-2]
    assert (created["seq"], created["data"]["content"], created["data"]["role"]) == (1, "say hello", "user")
    assert (completed["seq"], completed["data"]["role"]) == (2, "assistant")
    assert completed["data"]["content"] == "Hello from the worker process"
    assert "".join(f["data"]["delta"] for f in frames[2:-2]) == "Hello from the worker process"
    assert all(f["data"]["run_id"] == run_id for f in frames[1:] if f["type"] != "message.completed")
    assert frames[-1]["data"]["status"] == "completed"
    # The stored result, and who produced it: the worker process asked the model.
    run = _run(run_id)
    assert (run.status, run.attempts, run.provider) == ("completed", 1, "openai")
    assert run.reply_message.seq == 2 and run.reply_message.content == "Hello from the worker process"
    worker = server.worker()
    wait_for(
        lambda: re.search(r"run_agent_task\[[^]]+\] succeeded .*'completed'", worker.log()),
        timeout=5,
        what="the worker to log the task's success",
    )
    assert server.fake.requests[0]["auth"] == "Bearer sk-test"
    assert server.fake.requests[0]["body"]["messages"][-1] == {"role": "user", "content": "say hello"}
    # One request id end to end: the request, the worker's log lines and its audit records.
    task_lines = [line for line in worker.log().splitlines() if "run_agent_task" in line and "succeeded" in line]
    assert task_lines and all('"request_id": "e2e-request-1"' in line for line in task_lines), task_lines
    from audits.models import AuditRecord

    completed_audit = AuditRecord.objects.get(action="run.completed", resource_id=str(run_id))
    assert completed_audit.request_id == "e2e-request-1"
    assert AuditRecord.objects.get(action="message.sent", resource_id=str(accepted["message"]["id"])).request_id == (
        "e2e-request-1"
    )


# ---------------------------------------------------------------- SSE


def test_chat_stream_tool_turn_then_conversation_events_resume_and_go_live(server, account):
    fake = server.fake
    fake.call_tool("add_task", {"title": "buy milk"})
    fake.reply("Added buy milk to your list.")
    fake.reply("Anything else?")
    fake.reply("Live from the worker")
    http = _client(server, account)

    # A tool-calling turn streamed by the web process itself.
    with connect_sse(http, "POST", "/api/v1/chat/stream", json={"message": "add a task to buy milk"}) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        assert source.response.headers["cache-control"] == "no-cache"
        frames = _sse_until(source.iter_sse(), lambda f: f["type"] in ("run.completed", "run.failed"))

    kinds = [f["type"] for f in frames]
    assert kinds[:4] == ["message.created", "run.started", "tool.call", "tool.result"], kinds
    assert kinds[-2:] == ["message.completed", "run.completed"], kinds
    assert set(kinds[4:-2]) == {"message.delta"}, kinds
    assert frames[2]["data"]["name"] == "add_task" and frames[2]["data"]["arguments"] == {"title": "buy milk"}
    assert frames[3]["data"]["result"]["task"]["title"] == "buy milk"
    assert frames[-2]["data"]["content"] == "Added buy milk to your list."
    assert [f["seq"] for f in frames if f["seq"] is not None] == [1, 2]
    conversation_id = frames[0]["data"]["conversation_id"]
    assert Task.objects.get().title == "buy milk"

    # A second streamed turn (seq 3 and 4) that a listener resuming from 2 has missed.
    with connect_sse(
        http, "POST", "/api/v1/chat/stream", json={"message": "thanks", "conversation_id": conversation_id}
    ) as source:
        second = _sse_until(source.iter_sse(), lambda f: f["type"] in ("run.completed", "run.failed"))
    assert [f["seq"] for f in second if f["seq"] is not None] == [3, 4]

    with connect_sse(
        http, "GET", f"/api/v1/conversations/{conversation_id}/events", headers={"Last-Event-ID": "2"}
    ) as source:
        assert source.response.status_code == 200
        events = source.iter_sse()
        replayed = _sse_until(events, lambda f: f["seq"] == 4)
        assert [(f["type"], f["seq"]) for f in replayed] == [("message.created", 3), ("message.completed", 4)]
        assert replayed[1]["data"]["content"] == "Anything else?"

        # Then live: a message through the 202 path, answered by the Celery worker.
        accepted = _post_message(http, conversation_id, "one more")
        live = _sse_until(events, lambda f: f["type"] in ("run.completed", "run.failed"))

    kinds = [f["type"] for f in live]
    assert kinds[:2] == ["message.created", "run.started"], kinds
    assert kinds[-2:] == ["message.completed", "run.completed"], kinds
    assert [f["seq"] for f in live if f["seq"] is not None] == [5, 6]
    assert live[-2]["data"]["content"] == "Live from the worker"
    assert _run(accepted["run"]["id"]).status == "completed"
    assert list(Message.objects.filter(conversation_id=conversation_id).values_list("seq", flat=True)) == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]


# ---------------------------------------------------------------- lost workers


def _start_hanging_turn(server, account, content: str) -> int:
    """Posts a message whose first model call hangs, and waits until the worker is inside
    it (run ``running``, the model request received)."""
    server.fake.hang(30)
    http = _client(server, account)
    run_id = _post_message(http, _new_conversation(http), content)["run"]["id"]
    wait_for(lambda: _run(run_id).status == "running", timeout=DEADLINE, what="the run to be running")
    wait_for(lambda: len(server.fake.requests) == 1, timeout=DEADLINE, what="the worker to call the model")
    return run_id


def test_a_killed_pool_process_task_is_redelivered_and_the_run_completes(server, account):
    worker = server.worker()
    run_id = _start_hanging_turn(server, account, "add a task to survive")
    server.fake.call_tool("add_task", {"title": "survive"})
    server.fake.reply("Done, despite everything.")
    [child] = worker.children()

    os.kill(child, signal.SIGKILL)

    # acks_late + reject_on_worker_lost: the main process requeues the message and a new
    # pool process runs it again; run_execute picks the `running` run up as a new attempt.
    run = wait_for(lambda: _settled(run_id), timeout=DEADLINE, what="the run to settle after the kill")
    assert (run.status, run.attempts, run.error) == ("completed", 2, "")
    assert run.reply_message.content == "Done, despite everything."
    assert Task.objects.filter(title="survive").count() == 1
    assert worker.alive() and child not in worker.children()
    log = worker.log()
    assert "WorkerLostError" in log and "Retry in" not in log
    [task_id] = set(re.findall(r"run_agent_task\[([0-9a-f-]+)\] received", log))
    assert log.count(f"run_agent_task[{task_id}] received") == 2  # the same message, redelivered
    assert len(server.fake.requests) == 3  # the hung call, then the tool round and the answer


def test_a_turn_that_keeps_killing_its_worker_fails_after_its_attempts(stack):
    stack.env["AGENT_MAX_ATTEMPTS"] = "2"
    stack.start_all()
    worker = stack.worker()
    run_id = _start_hanging_turn(stack, register(stack), "crash, please")
    stack.fake.hang(30)  # the redelivered attempt hangs too
    stack.fake.reply("never asked for")
    [first] = worker.children()

    os.kill(first, signal.SIGKILL)
    wait_for(lambda: len(stack.fake.requests) == 2, timeout=DEADLINE, what="the redelivered attempt")
    assert _run(run_id).attempts == 2
    [second] = worker.children()
    os.kill(second, signal.SIGKILL)

    # Redelivered once more, with no attempt left: failed, acknowledged, not run again.
    run = wait_for(lambda: _settled(run_id), timeout=DEADLINE, what="the run to fail")
    assert (run.status, run.attempts, run.reply_message) == ("failed", 2, None)
    assert run.error == "the worker running this turn was lost"
    wait_for(
        lambda: re.search(r"run_agent_task\[[^]]+\] succeeded .*'failed'", worker.log()),
        timeout=5,
        what="the worker to acknowledge the failed run",
    )
    assert len(stack.fake.requests) == 2


def test_a_killed_worker_leaves_a_running_run_that_the_sweep_queues_again(server, account):
    worker = server.worker()
    run_id = _start_hanging_turn(server, account, "hello?")
    server.fake.reply("Back after the sweep.")

    # The whole worker dies: nobody is left to reject the message, and Redis hands an
    # unacknowledged one out again only after the visibility timeout (2x the time limit).
    worker.kill_group(signal.SIGKILL)
    worker.popen.wait(10)
    assert _run(run_id).status == "running"

    # The periodic sweep, run as beat would run it, at a time past the task time limit.
    out = server.run_python(
        "import json\n"
        "from datetime import timedelta\n"
        "from django.conf import settings\n"
        "from django.utils import timezone\n"
        "from chat.services.runs import runs_sweep\n"
        "later = timezone.now() + timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 61)\n"
        "print(json.dumps(runs_sweep(now=later)))\n"
    )
    assert json.loads(out.strip().splitlines()[-1]) == {"requeued": [run_id], "failed": []}
    assert _run(run_id).status == "queued"

    server.start_worker()  # a replacement worker takes the requeued task
    run = wait_for(lambda: _settled(run_id), timeout=DEADLINE, what="the swept run to settle")
    assert (run.status, run.attempts) == ("completed", 2)
    assert run.reply_message.content == "Back after the sweep."
