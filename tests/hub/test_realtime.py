"""A message sent over the WebSocket in a bound conversation is routed like the 202 path,
and each status reaches the socket as ``message.status``."""

import pytest
from channels.db import database_sync_to_async

from hub.models import MessageStatusChange
from tests.accounts.factories import UserFactory
from tests.chat.streams import communicator, receive_until

from .conftest import connect


def _bound(user):
    from hub.services import bindings

    account = connect(user, settings={"report_read": True}).account
    return bindings.binding_create(user=user, account_id=account.pk, address="447700900555").conversation_id


@pytest.mark.django_db(transaction=True)
async def test_a_websocket_message_send_is_routed_and_its_statuses_stream_back():
    user = await database_sync_to_async(UserFactory)(role="owner")
    conversation_id = await database_sync_to_async(_bound)(user)
    comm = await communicator(user, conversation_id)
    connected, _ = await comm.connect()
    assert connected

    await comm.send_json_to({"type": "message.send", "content": "On my way", "ref": "r1"})
    frames = await receive_until(
        comm, lambda f: f["type"] == "message.status" and f["data"]["status"] == "read", timeout=10
    )
    await comm.disconnect()

    [ack] = [f for f in frames if f["type"] == "message.ack"]
    assert ack["data"]["run_id"] is None  # the contact gets it; the agent does not answer it
    message_id = ack["data"]["message_id"]
    kinds = [f["type"] for f in frames if f["type"] != "message.ack"]
    assert kinds == ["message.created"] + ["message.status"] * 4  # the message first, then its statuses
    [created] = [f for f in frames if f["type"] == "message.created"]
    assert created["data"]["status"] == "accepted" and created["data"]["id"] == message_id
    status_frames = [f for f in frames if f["type"] == "message.status"]
    assert [f["data"]["status"] for f in status_frames] == ["queued", "sent", "delivered", "read"]
    assert all(f["data"]["message_id"] == message_id and f["data"]["at"].endswith("Z") for f in status_frames)
    history = await database_sync_to_async(
        lambda: list(MessageStatusChange.objects.filter(message_id=message_id).values_list("status", flat=True))
    )()
    assert history == ["accepted", "queued", "sent", "delivered", "read"]
