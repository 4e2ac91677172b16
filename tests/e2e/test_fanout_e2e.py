"""Issue 15 on the real stack: many WebSocket clients of one conversation on daphne and the
Redis channel layer (core and pub/sub). Every client is in the conversation's group once its handshake is
accepted; when they all disconnect at once (half with a close frame, half by dropping the
TCP connection) the group is left with no member, and a client that connects afterwards
gets the next message."""

import asyncio
import json
import os
import time

import pytest
import redis
from websockets.asyncio.client import connect as ws_connect

from .conftest import register, wait_for
from .test_realtime_e2e import _client, _new_conversation, _post_message

pytestmark = pytest.mark.timeout(180)

CLIENTS = 200


def _group_key(conversation_id: int) -> str:
    return f"asgi:group:conversation.{conversation_id}"


def _pubsub_prefix() -> str:
    from config.settings.channels import pubsub_prefix

    return pubsub_prefix("asgi", os.environ["REDIS_URL"])


def _group_members(conversation_id: int, layer: str = "core") -> int:
    """What the conversation's group holds in Redis: core, the members in its sorted set;
    pub/sub, the processes subscribed to its channel plus the sockets' own channels still
    subscribed (each socket has one while it lives)."""
    store = redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=2)
    try:
        if layer == "core":
            return store.zcard(_group_key(conversation_id))
        prefix = _pubsub_prefix()
        [(_, processes)] = store.pubsub_numsub(f"{prefix}__group__conversation.{conversation_id}")
        return processes + len(store.pubsub_channels(f"{prefix}specific.*"))
    finally:
        store.close()


def _forget_group(conversation_id: int) -> None:
    """Ids repeat across runs on the reused test database; a member another run's killed
    server left under this id (it expires by itself) is not this test's."""
    store = redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=2)
    try:
        store.delete(_group_key(conversation_id))
    finally:
        store.close()


async def _open(url: str, count: int) -> list:
    gate = asyncio.Semaphore(20)

    async def one():
        async with gate:
            return await ws_connect(url, ping_interval=None, open_timeout=60)

    return await asyncio.gather(*(one() for _ in range(count)))


async def _disconnect_all(sockets: list) -> None:
    async def drop(i, ws):
        if i % 2:
            ws.transport.abort()  # abnormal: no close frame, the TCP connection just goes
        else:
            await ws.close()

    await asyncio.gather(*(drop(i, ws) for i, ws in enumerate(sockets)))


@pytest.mark.parametrize("layer", ["core", "pubsub"])
def test_mass_disconnect_leaves_no_member_and_a_later_send_reaches_a_new_client(stack, layer):
    stack.env["CHANNEL_LAYER"] = layer
    stack.env["REALTIME_MAX_SOCKETS_PER_USER"] = str(CLIENTS + 10)
    stack.start_daphne()
    account = register(stack)
    http = _client(stack, account)
    conversation_id = _new_conversation(http)
    _forget_group(conversation_id)
    url = (
        stack.base_url.replace("http://", "ws://")
        + f"/ws/v1/conversations/{conversation_id}/?token={account['access']}"
    )

    async def storm() -> int:
        sockets = await _open(url, CLIENTS)
        # Accepted means subscribed: every accepted client is a member already.
        members = _group_members(conversation_id, layer)
        await _disconnect_all(sockets)
        return members

    members_while_open = asyncio.run(storm())
    wait_for(lambda: _group_members(conversation_id, layer) == 0, timeout=30, what="the group to empty")

    async def later_send() -> dict:
        async with ws_connect(url, ping_interval=None, open_timeout=30) as ws:
            posted = await asyncio.to_thread(_post_message, http, conversation_id, "after the storm")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=20))
                if frame["type"] == "message.created":
                    return {"frame": frame, "posted": posted, "members": _group_members(conversation_id, layer)}
            pytest.fail("no message.created after the mass disconnect")

    result = asyncio.run(later_send())

    # pub/sub: one subscription of the process to the group, and each socket's own channel.
    assert members_while_open == (CLIENTS if layer == "core" else 1 + CLIENTS)
    assert result["frame"]["seq"] == result["posted"]["message"]["seq"]
    assert result["frame"]["data"]["content"] == "after the storm"
    assert result["members"] == (1 if layer == "core" else 2)
    wait_for(lambda: _group_members(conversation_id, layer) == 0, timeout=10, what="the last client to leave")
