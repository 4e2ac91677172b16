"""Query counts pinned on the hot chat paths (Zulip's habit): a change that adds a query
to them shows here. The numbers are what the code does today, not targets."""

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.models import AgentRun, Task
from conversations.models import Message
from tests.accounts.factories import UserFactory
from tests.chat.streams import communicator, receive_until
from tests.conversations.factories import ConversationFactory


@pytest.mark.django_db
def test_sync_chat_turn_with_one_tool_call(auth_api, user, django_assert_num_queries):
    auth_api.post("/api/v1/chat", {"message": "hello"}, format="json")  # warm: conversation-independent caches

    # Served async (config/api/fast.py): the caller comes from the caller cache the warm
    # request filled, so no user query. The conversation with its participant and record,
    # its first message with its record and the run (one statement); the tool's savepoint,
    # task, record and release; the reply's seq bump, reply, run settled and record (one).
    # (Was 18.) SQLite (the embedded default) writes each row with its own statement: 17.
    with django_assert_num_queries(8 if connection.vendor == "postgresql" else 17):
        response = auth_api.post("/api/v1/chat", {"message": "add a task to buy milk"}, format="json")

    assert response.status_code == 200, response.content
    assert [c["name"] for c in response.json()["tool_calls"]] == ["add_task"]
    assert Task.objects.filter(owner=user, title="buy milk").count() == 1


@pytest.mark.django_db
def test_message_post_202(auth_api, user, django_assert_num_queries):
    conversation = ConversationFactory(owner=user)

    # On-commit work (the enqueue) never runs inside the test's transaction: this is the request.
    # The caller, the savepoint, the conversation (scope check), the seq bump + message +
    # audit record + run in one statement, the release. (Was 8; SQLite still 8.)
    with django_assert_num_queries(5 if connection.vendor == "postgresql" else 8):
        response = auth_api.post(
            f"/api/v1/conversations/{conversation.pk}/messages", {"content": "hello"}, format="json"
        )

    assert response.status_code == 202, response.content
    assert AgentRun.objects.filter(conversation=conversation, status="queued").count() == 1
    # The next post of the same caller: the caller cache answers (config/api/fast.py), one
    # query fewer (SQLite: 7).
    with django_assert_num_queries(4 if connection.vendor == "postgresql" else 7):
        again = auth_api.post(f"/api/v1/conversations/{conversation.pk}/messages", {"content": "again"}, format="json")
    assert again.status_code == 202, again.content


def savepoints_not_of_audits(statements: list[str]) -> list[str]:
    """SAVEPOINTs our services take, leaving out audit recording's own (audits/, not ours
    here): a savepoint whose next statement touches an ``audits_`` table."""
    return [
        sql
        for sql, following in zip(statements, [*statements[1:], ""], strict=True)
        if sql.startswith("SAVEPOINT") and "audits_" not in following
    ]


def of_audits(sql: str) -> bool:
    """A statement of audit recording or sealing alone (``audits_`` tables). A ``WITH`` that
    writes a message, its audit record and its run in one statement is ours."""
    return "audits_" in sql and not sql.startswith("WITH")


def statements_not_of_audits(statements: list[str]) -> list[str]:
    """Our statements: audit recording's (``audits_`` tables, savepoints) left out, and so
    are the transactions of the audit seals that run in-process after each commit in the
    embedded mode (a BEGIN/COMMIT with only audit statements inside)."""
    kept = [sql for sql in statements if not of_audits(sql) and "SAVEPOINT" not in sql]
    ours: list[str] = []
    for sql in kept:
        if sql == "COMMIT" and ours and ours[-1].startswith("BEGIN"):
            ours.pop()  # an empty transaction once the audit statements are gone: a seal
            continue
        ours.append(sql)
    return ours


@pytest.mark.django_db(transaction=True)
def test_sync_chat_turn_as_served_takes_no_savepoint(auth_api, user):
    """As production runs it (each service's outermost block is a real transaction, not a
    savepoint inside the test's): the turn's statements, BEGIN/COMMIT included, and no
    SAVEPOINT/RELEASE of ours. Audit recording's statements (audits/) are left out."""
    auth_api.post("/api/v1/chat", {"message": "hello"}, format="json")

    with CaptureQueriesContext(connection) as captured:
        response = auth_api.post("/api/v1/chat", {"message": "add a task to buy milk"}, format="json")

    assert response.status_code == 200, response.content
    statements = [q["sql"] for q in captured.captured_queries]
    # One SAVEPOINT: the tool call's, inside the turn's last transaction (a failing tool
    # leaves no half-done writes and the turn goes on); none elsewhere.
    assert len(savepoints_not_of_audits(statements)) == 1
    assert "chat_task" in statements[statements.index(savepoints_not_of_audits(statements)[0]) + 1]
    ours = statements_not_of_audits(statements)
    # Two transactions (the caller from the caller cache the first request filled: the
    # async fast path, config/api/fast.py); BEGIN, one statement: the conversation with its
    # participant and audit record, its first message with its record, and the run stored
    # running and claimed for this request; COMMIT (Django's BEGIN and COMMIT, logged; the
    # server sees none: the statement commits on its own, tests/chat/test_turn_writes.py);
    # the history is the one message (not read back); BEGIN, the tool's task, the seq bump
    # with the reply, the run settled with it and its record (one statement), COMMIT.
    # (Was 14: the caller's query, and each of those writes a statement of its own.)
    assert len(ours) == (7 if connection.vendor == "postgresql" else 13), "\n".join(ours)
    assert sum(sql.startswith("BEGIN") or sql == "COMMIT" for sql in ours) == 4
    assert Task.objects.filter(owner=user, title="buy milk").count() == 1


@pytest.mark.django_db(transaction=True)
def test_message_post_202_as_served_takes_no_savepoint(auth_api, user):
    conversation = ConversationFactory(owner=user)

    with CaptureQueriesContext(connection) as captured:
        response = auth_api.post(
            f"/api/v1/conversations/{conversation.pk}/messages", {"content": "hello"}, format="json"
        )

    assert response.status_code == 202, response.content
    statements = [q["sql"] for q in captured.captured_queries]
    # The request's own statements end at its COMMIT; after it the embedded (eager) Celery
    # runs the turn in-process.
    request_part = statements[: statements.index("COMMIT") + 1] if "COMMIT" in statements else statements
    assert savepoints_not_of_audits(request_part) == []
    ours = statements_not_of_audits(request_part)
    # The caller; BEGIN, the conversation (scope check), the seq bump with the message, its
    # audit record and the run (one statement), COMMIT. (Was 7.)
    assert len(ours) == (5 if connection.vendor == "postgresql" else 7), "\n".join(ours)
    assert AgentRun.objects.filter(conversation=conversation).count() == 1


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
    # PostgreSQL writes the seq bump, message, audit record and run (and the reply's) in one
    # statement each (config/statements.py): was 27.
    expected = 21 if connection.vendor == "postgresql" else 32
    assert len(counter.statements) == expected, "\n".join(counter.statements)
    assert await database_sync_to_async(Message.objects.filter(conversation=conversation).count)() == 2
