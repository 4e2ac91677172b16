"""Issue 9, idle listeners on the real stack: daphne on the Redis channel layer keeps an idle
WebSocket and an idle SSE events stream alive for longer than every timeout involved
(redis-py's 5 s socket timeout, channels-redis' 5 s blocking read, the 2 s heartbeat), and
both still get the live events afterwards. A listener without a resume point gets live
events only, not the conversation's history."""

import json
import threading
import time

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from conversations.models import Conversation
from tests.conversations.factories import add_messages

from .conftest import register
from .test_realtime_e2e import DEADLINE, _client, _is, _new_conversation, _post_message, _ws_frames_until

pytestmark = pytest.mark.timeout(120)

HEARTBEAT_SECONDS = 6
IDLE_SECONDS = 20.0  # > redis-py's socket timeout (5 s) and channels-redis' BZPOPMIN (5 s), x4


def sse_items(response: httpx.Response):
    """``("comment", text)`` and ``("event", frame)`` items of a raw SSE stream, in order
    (httpx-sse hides comment lines, and the heartbeats are comments)."""
    data = None
    for line in response.iter_lines():
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("data: "):
            data = json.loads(line[len("data: ") :])
        elif line == "" and data is not None:
            yield "event", data
            data = None


def sse_until(items, predicate, *, timeout: float = DEADLINE) -> list[dict]:
    deadline, frames = time.monotonic() + timeout, []
    for kind, value in items:
        if kind == "event":
            frames.append(value)
            if predicate(value):
                return frames
        if time.monotonic() > deadline:
            break
    pytest.fail(f"SSE stream ended or stalled after {[f['type'] for f in frames]}")


def _stored(frames: list[dict]) -> list[tuple[str, int]]:
    return [(f["type"], f["seq"]) for f in frames if f["seq"] is not None]


def test_idle_websocket_and_sse_listeners_live_and_get_only_new_events(stack):
    # A heartbeat interval above the 5 s timeouts: the SSE stream's receive is not cut
    # short by its own heartbeat timer before the Redis read would time out.
    stack.env["SSE_HEARTBEAT_SECONDS"] = str(HEARTBEAT_SECONDS)
    server = stack.start_all()
    account = register(server)
    server.fake.reply("Still here")
    http = _client(server, account)
    conversation_id = _new_conversation(http)
    add_messages(Conversation.objects.get(pk=conversation_id), 3)  # history: seq 1..3
    ws_url = (
        f"{server.base_url.replace('http', 'ws', 1)}/ws/v1/conversations/{conversation_id}/?token={account['access']}"
    )
    sse_http = httpx.Client(
        base_url=server.base_url, headers=account["headers"], timeout=httpx.Timeout(10, read=10), trust_env=False
    )

    with (
        ws_connect(ws_url, open_timeout=10, proxy=None) as ws,
        sse_http.stream("GET", f"/api/v1/conversations/{conversation_id}/events") as response,
    ):
        ws.send(json.dumps({"type": "ping", "ref": "before"}))
        assert _ws_frames_until(ws, _is("pong"))[-1]["data"]["ref"] == "before"
        assert response.status_code == 200
        items = sse_items(response)

        # Idle on both: the SSE stream must keep sending heartbeats, the WebSocket must stay
        # open without any frame.
        comments, data_frames, started = [], [], time.monotonic()
        for kind, value in items:
            (comments if kind == "comment" else data_frames).append(value)
            if time.monotonic() - started >= IDLE_SECONDS:
                break
        heartbeats = comments.count("heartbeat")
        assert comments[0] == "open"
        assert data_frames == []  # no history replayed without a resume point
        assert heartbeats >= IDLE_SECONDS // HEARTBEAT_SECONDS - 1, comments
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.1)  # nothing arrived and the socket is still open (no 1011)

        # Then live: both get the new message and the worker's reply, and nothing older.
        ws_frames: list[dict] = []
        reader = threading.Thread(
            target=lambda: ws_frames.extend(
                _ws_frames_until(ws, lambda f: f["type"] in ("run.completed", "run.failed"))
            )
        )
        reader.start()
        _post_message(http, conversation_id, "are you there?")
        sse_frames = sse_until(items, lambda f: f["type"] in ("run.completed", "run.failed"))
        reader.join(DEADLINE + 5)

    for frames in (ws_frames, sse_frames):
        assert frames and frames[-1]["type"] == "run.completed", [f["type"] for f in frames]
        assert _stored(frames) == [("message.created", 4), ("message.completed", 5)]
        assert [f["type"] for f in frames].count("message.created") == 1
        assert frames[0]["data"]["content"] == "are you there?"
