"""Query counts pinned on the hot chat paths (Zulip's habit): a change that adds a query
to them shows here. The numbers are what the code does today, not targets."""

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from chat.models import AgentRun, Task
from conversations.models import Message
from tests.accounts.factories import UserFactory
from tests.chat.streams import communicator, receive_until
from tests.conversations.factories import ConversationFactory


@pytest.mark.django_db
def test_sync_chat_turn_with_one_tool_call(auth_api, user, django_assert_num_queries):
    auth_api.post("/api/v1/chat", {"message": "hello"}, format="json")  # warm: conversation-independent caches

    with django_assert_num_queries(39):
        response = auth_api.post("/api/v1/chat", {"message": "add a task to buy milk"}, format="json")

    assert response.status_code == 200, response.content
    assert [c["name"] for c in response.json()["tool_calls"]] == ["add_task"]
    assert Task.objects.filter(owner=user, title="buy milk").count() == 1


@pytest.mark.django_db
def test_message_post_202(auth_api, user, django_assert_num_queries):
    conversation = ConversationFactory(owner=user)

    # On-commit work (the enqueue) never runs inside the test's transaction: this is the request.
    with django_assert_num_queries(16):
        response = auth_api.post(
            f"/api/v1/conversations/{conversation.pk}/messages", {"content": "hello"}, format="json"
        )

    assert response.status_code == 202, response.content
    assert AgentRun.objects.filter(conversation=conversation, status="queued").count() == 1


class QueryCounter:
    def __init__(self):
        self.statements = []

    def __call__(self, execute, sql, params, many, context):
        self.statements.append(sql)
        return execute(sql, params, many, context)


@pytest.mark.django_db(transaction=True)
async def test_websocket_message_send():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    comm = await communicator(user, conversation.pk)
    connected, _ = await comm.connect()
    assert connected
    counter = QueryCounter()
    # The consumer's ORM calls share one thread (thread-sensitive): count on its connection.
    await database_sync_to_async(lambda: connection.execute_wrappers.append(counter))()

    await comm.send_json_to({"type": "message.send", "content": "hello", "ref": "r1"})
    await receive_until(comm, lambda f: f["type"] == "message.ack")
    await database_sync_to_async(lambda: connection.execute_wrappers.remove(counter))()
    await comm.disconnect()

    # Embedded Celery runs the turn on commit, before the ack: the pin covers the whole turn
    # (and the in-process audit seals after each commit: issue 11).
    # SQLite (the embedded default) spells the run's lock and history reads differently.
    # The handshake is accepted once connect's own reads are done: none of them is counted.
    expected = 38 if connection.vendor == "postgresql" else 43
    assert len(counter.statements) == expected, "\n".join(counter.statements)
    assert await database_sync_to_async(Message.objects.filter(conversation=conversation).count)() == 2
