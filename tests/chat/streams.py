"""Helpers to read SSE responses and WebSocket frames in-process."""

import asyncio
import json

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.services import tokens_for
from config.routing import websocket_application


def parse_sse(text: str) -> list[dict]:
    """Events of an SSE body: [{"id", "event", "data"}], comments dropped."""
    events = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if fields:
            events.append({"id": fields.get("id"), "event": fields.get("event"), "data": json.loads(fields["data"])})
    return events


async def read_sse(response, *, until, timeout: float = 5.0, close: bool = True) -> list[dict]:
    """Reads an (endless) SSE response until ``until(events)`` holds; closes it unless told
    not to (a later call goes on reading the same stream). Each chunk is whole events."""
    if not hasattr(response, "_sse_iterator"):
        response._sse_iterator = aiter(response.streaming_content)
    iterator, events = response._sse_iterator, []
    try:
        while not until(events):
            chunk = await asyncio.wait_for(anext(iterator), timeout)
            events += parse_sse(chunk.decode() if isinstance(chunk, bytes) else chunk)
    finally:
        if close:
            await iterator.aclose()
    return events


async def access_token(user) -> str:
    return (await database_sync_to_async(tokens_for)(user)).access


async def communicator(user, conversation_id: int, *, query: str = "", subprotocols=None, token: str | None = None):
    if token is None and user is not None and subprotocols is None:
        token = await access_token(user)
    params = "&".join(p for p in [f"token={token}" if token else "", query] if p)
    path = f"/ws/v1/conversations/{conversation_id}/" + (f"?{params}" if params else "")
    return WebsocketCommunicator(websocket_application, path, subprotocols=subprotocols)


async def receive_until(comm, predicate, timeout: float = 5.0) -> list[dict]:
    frames = []
    while not frames or not predicate(frames[-1]):
        frames.append(await comm.receive_json_from(timeout=timeout))
    return frames
