"""A turn's writes in one statement each (config/statements.py, on PostgreSQL): the seq
bump, the message, its audit record and its run; the conversation with its participant and
record; the reply with its run's settling and record. Every guarantee of the separate
statements holds: gapless seqs under concurrent writers, one message per client_message_id,
nothing left behind by a write that fails, audit records complete and sealable."""

import pytest
from django.db import DataError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from audits.models import AuditChain, AuditRecord
from audits.selectors import audit_chain_verify
from audits.services import audit_seal_chains
from chat.models import AgentRun
from chat.services import runs, turns
from config import statements
from conversations.models import Conversation, Message
from conversations.services import message_create, message_send
from tests.accounts.factories import UserFactory
from tests.conversations.factories import ConversationFactory
from tests.helpers import run_together

pytestmark = pytest.mark.django_db


def _writes(captured) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if q["sql"].startswith(("WITH", "INSERT", "UPDATE"))]


def test_a_turn_stores_message_record_and_run_together(user):
    conversation = ConversationFactory(owner=user)

    with CaptureQueriesContext(connection) as captured:
        turn = turns.turn_begin(user=user, content="hello", conversation_id=conversation.pk)

    message, run = turn.message, turn.run
    stored = Message.objects.get(pk=message.pk)
    assert (stored.seq, stored.content, stored.sender_id) == (1, "hello", user.pk)
    assert (message.seq, turn.conversation.last_seq) == (1, 1)
    assert AgentRun.objects.get(pk=run.pk).trigger_message_id == message.pk
    assert run.trigger_message is message  # cached: no query to read it back
    record = AuditRecord.objects.get(action="message.sent")
    assert (record.resource_type, record.resource_id) == ("message", str(message.pk))
    assert record.details == {"conversation_id": conversation.pk, "seq": 1}
    assert (record.actor_id, record.tenant_id, record.actor_label) == (user.pk, user.tenant_id, user.email)
    if connection.vendor == "postgresql":
        # One statement: the seq bump, the message, its record and its run.
        assert len(_writes(captured)) == 1, _writes(captured)


def test_records_written_with_the_message_seal_into_a_verified_chain(user):
    conversation = ConversationFactory(owner=user)
    for i in range(3):
        turns.turn_begin(user=user, content=f"m{i}", conversation_id=conversation.pk)
    turns.turn_begin(user=user, content="a new conversation")

    audit_seal_chains(tenant=user.tenant_id)

    assert not AuditRecord.objects.filter(tenant_id=user.tenant_id, chain_seq__isnull=True).exists()
    assert audit_chain_verify(chain=AuditChain.objects.get(tenant_id=user.tenant_id)).ok
    seqs = sorted(
        r.details["seq"]
        for r in AuditRecord.objects.filter(action="message.sent", details__conversation_id=conversation.pk)
    )
    assert seqs == [1, 2, 3]


def test_a_new_conversation_is_stored_with_its_participant_record_and_first_message(user):
    with CaptureQueriesContext(connection) as captured:
        turn = turns.turn_begin(user=user, content="start here")

    conversation = Conversation.objects.get(pk=turn.conversation.pk)
    assert list(conversation.participants.values_list("pk", flat=True)) == [user.pk]
    assert conversation.last_seq == 1 and conversation.title == "start here"
    created = AuditRecord.objects.get(action="conversation.created")
    assert created.resource_id == str(conversation.pk)
    assert created.details == {"title": "start here", "channel": "api"}
    sent = AuditRecord.objects.get(action="message.sent")
    assert sent.details == {"conversation_id": conversation.pk, "seq": 1}
    assert sent.resource_id == str(turn.message.pk)
    assert Message.objects.get(pk=turn.message.pk).conversation_id == conversation.pk
    assert AgentRun.objects.get(pk=turn.run.pk).conversation_id == conversation.pk
    assert turn.run.conversation is turn.conversation or turn.run.conversation_id == conversation.pk
    if connection.vendor == "postgresql":
        # The conversation (participant, record) and its first message (record, run): one.
        assert len(_writes(captured)) == 1, _writes(captured)


def test_a_duplicate_client_message_id_at_the_insert_leaves_nothing_behind(user):
    """The unique constraint decides (the pre-check is only a shortcut): the failing
    statement takes its seq bump, audit record and run with it."""
    conversation = ConversationFactory(owner=user)
    first = turns.turn_begin(user=user, content="hi", conversation_id=conversation.pk, client_message_id="c-1")

    with pytest.raises(IntegrityError), transaction.atomic():
        message_create(conversation=conversation, role="user", content="hi", client_message_id="c-1")

    conversation.refresh_from_db()
    assert conversation.last_seq == 1
    assert Message.objects.filter(conversation=conversation).count() == 1
    assert AuditRecord.objects.filter(action="message.sent").count() == 1
    assert AgentRun.objects.filter(conversation=conversation).count() == 1
    again = turns.turn_begin(user=user, content="hi", conversation_id=conversation.pk, client_message_id="c-1")
    assert (again.created, again.message.pk, again.run.pk) == (False, first.message.pk, first.run.pk)


def test_a_message_into_a_deleted_conversation_writes_nothing(user):
    conversation = ConversationFactory(owner=user)
    stale = Conversation.objects.get(pk=conversation.pk)
    Conversation.objects.filter(pk=conversation.pk).delete()

    with pytest.raises(Conversation.DoesNotExist), transaction.atomic():
        message_send(conversation=stale, user=user, content="too late")

    assert not Message.objects.exists()
    assert not AuditRecord.objects.filter(action="message.sent").exists()


def test_a_run_taken_over_while_its_reply_is_stored_leaves_no_reply(user):
    """The reply, its seq, the run's settling and its record are one statement in one
    transaction: when the run is no longer ours, all of it rolls back."""
    turn = turns.turn_begin(user=user, content="hello", claim=True)
    AgentRun.objects.filter(pk=turn.run.pk).update(claimed_by="request:someone-else")

    result = turn.execute(runs.Delivery.in_request())

    assert result.outcome == runs.Outcome.NOT_OURS
    conversation = Conversation.objects.get(pk=turn.conversation.pk)
    assert conversation.last_seq == 1
    assert list(Message.objects.filter(conversation=conversation).values_list("role", flat=True)) == ["user"]
    assert not AuditRecord.objects.filter(action="run.completed").exists()
    stored = AgentRun.objects.get(pk=turn.run.pk)
    assert (stored.status, stored.reply_message_id) == ("running", None)


def test_a_settled_turn_names_its_reply(user):
    turn = turns.turn_answer(user=user, content="add a task to buy milk")

    stored = AgentRun.objects.get(pk=turn.run.pk)
    reply = Message.objects.get(pk=stored.reply_message_id)
    assert (turn.run.status, stored.status) == ("completed", "completed")
    assert turn.run.reply_message_id == reply.pk and reply.seq == 2 and reply.role == "assistant"
    record = AuditRecord.objects.get(action="run.completed")
    assert (record.resource_id, record.details) == (str(turn.run.pk), {"provider": "local", "tools": ["add_task"]})


@pytest.mark.django_db(transaction=True)
def test_concurrent_turns_in_one_conversation_keep_seq_order_without_gaps(real_stack):
    owner = UserFactory()
    conversation = ConversationFactory(owner=owner)
    writers, per_writer = 6, 5

    def write(_):
        for i in range(per_writer):
            turns.turn_begin(user=owner, content=f"m{i}", conversation_id=conversation.pk)

    run_together(writers, write)  # raises the first error a writer met
    total = writers * per_writer
    messages = list(Message.objects.filter(conversation=conversation).order_by("seq"))
    assert [m.seq for m in messages] == list(range(1, total + 1))
    # Order by seq is order by id within one conversation: a later seq was inserted later.
    assert [m.pk for m in messages] == sorted(m.pk for m in messages)
    assert Conversation.objects.get(pk=conversation.pk).last_seq == total
    runs_by_message = {r.trigger_message_id for r in AgentRun.objects.filter(conversation=conversation)}
    assert runs_by_message == {m.pk for m in messages}
    recorded = AuditRecord.objects.filter(action="message.sent", details__conversation_id=conversation.pk)
    assert sorted(r.details["seq"] for r in recorded) == list(range(1, total + 1))
    assert {r.resource_id for r in recorded} == {str(m.pk) for m in messages}


@pytest.mark.django_db(transaction=True)
def test_concurrent_resends_of_one_client_message_id_store_one_turn(real_stack):
    owner = UserFactory()
    conversation = ConversationFactory(owner=owner)
    senders = 6

    def send(_):
        turn = turns.turn_enqueue(user=owner, conversation_id=conversation.pk, content="once", client_message_id="same")
        return turn.message.pk, turn.run.pk

    got = run_together(senders, send)  # raises the first error a sender met
    assert len(set(got)) == 1 and len(got) == senders
    assert Message.objects.filter(conversation=conversation, role="user").count() == 1
    assert Message.objects.get(conversation=conversation, role="user").seq == 1
    assert AgentRun.objects.filter(conversation=conversation).count() == 1
    assert AuditRecord.objects.filter(action="message.sent", details__conversation_id=conversation.pk).count() == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="one statement: PostgreSQL's WITH")
def test_writes_report_a_first_step_that_touched_nothing_and_write_nothing(user):
    conversation = ConversationFactory(owner=user)
    writes = statements.Writes()
    bump = writes.add(
        'UPDATE "conversations_conversation" SET "last_seq" = "last_seq" + 1 WHERE "id" = %s RETURNING "last_seq"',
        [conversation.pk + 1000],
        ["last_seq"],
    )
    message = Message(tenant_id=user.tenant_id, conversation=conversation, role="user", content="x")
    message.seq = bump.ref("last_seq")
    writes.insert(message)
    done = []
    writes.on_done(lambda: done.append(1))

    with pytest.raises(statements.NothingWritten):
        writes.execute()

    assert done == [] and not Message.objects.exists()


class ServerTransactions:
    """Per statement: its first words, and whether it ran as a transaction of its own (the
    psycopg session in autocommit: no BEGIN sent before it, no COMMIT after)."""

    def __init__(self):
        self.seen: list[tuple[str, bool]] = []

    def __call__(self, execute, sql, params, many, context):
        self.seen.append((sql, context["connection"].connection.autocommit))
        return execute(sql, params, many, context)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="one statement: PostgreSQL's WITH")
def test_a_turn_in_an_existing_conversation_is_one_statement_and_one_transaction(real_stack, settings):
    owner = UserFactory()
    conversation = ConversationFactory(owner=owner)
    order: list[str] = []
    watcher = ServerTransactions()

    with connection.execute_wrapper(watcher):
        turn = turns.turn_begin(
            user=owner,
            content="hello",
            conversation_id=conversation.pk,
            on_committed=lambda t: order.append("on_committed"),
            after_commit=lambda t: order.append("after_commit"),
        )

    # The scope read and the write, each on its own (no BEGIN, no COMMIT round trip); then
    # the turn's after-commit work (the audit seal, in-process with eager Celery).
    (read, read_alone), (write, write_alone), *after = watcher.seen
    assert read.startswith('SELECT m."id"') and "conversations_conversation_participants" in read
    assert write.startswith("WITH s0 AS (UPDATE")
    assert read_alone and write_alone
    assert all("audits_" in sql or "SAVEPOINT" in sql for sql, _ in after), [sql[:60] for sql, _ in after]
    assert order == ["on_committed", "after_commit"]
    assert connection.in_atomic_block is False and connection.connection.autocommit is True
    stored = Message.objects.get(pk=turn.message.pk)
    assert stored.seq == 1 and AgentRun.objects.get(pk=turn.run.pk).trigger_message_id == stored.pk
    assert AuditRecord.objects.filter(action="message.sent", resource_id=str(stored.pk)).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_turn_after_another_write_in_the_transaction_stays_in_it(real_stack):
    """Nothing commits early: once the transaction has written (here a new conversation),
    the message's statement runs inside it, and a failure after it rolls all of it back."""
    owner = UserFactory()
    conversation = ConversationFactory(owner=owner)

    with pytest.raises(RuntimeError), transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk).update(title="renamed")
        message_send(conversation=conversation, user=owner, content="doomed", own_transaction=True)
        raise RuntimeError("abort")

    assert not Message.objects.exists()
    assert not AuditRecord.objects.filter(action="message.sent").exists()
    conversation.refresh_from_db()
    assert (conversation.title, conversation.last_seq) != ("renamed", 1)
    assert conversation.last_seq == 0


@pytest.mark.django_db(transaction=True)
def test_the_202_path_queues_its_run_after_the_statement_committed(real_stack, settings):
    owner = UserFactory()
    conversation = ConversationFactory(owner=owner)

    turn = turns.turn_enqueue(user=owner, conversation_id=conversation.pk, content="add a task to buy milk")

    # Celery is eager here: the run was handed over after the commit and answered.
    run = AgentRun.objects.get(pk=turn.run.pk)
    assert run.status == "completed"
    assert Message.objects.get(pk=run.reply_message_id).seq == 2


def test_an_update_of_a_text_column_fails_on_an_overlong_value_as_the_orm_does(real_stack, user):
    # An explicit cast to varchar(n) would cut the value to n characters and store it.
    conversation = ConversationFactory(owner=user, title="kept")
    writes = statements.Writes()
    writes.update(Conversation, pk=conversation.pk, values={"title": "x" * 201})

    with pytest.raises(DataError), transaction.atomic():
        writes.execute()

    conversation.refresh_from_db()
    assert conversation.title == "kept"
    fits = statements.Writes()
    fits.update(Conversation, pk=conversation.pk, values={"title": "y" * 200})
    fits.execute()
    conversation.refresh_from_db()
    assert conversation.title == "y" * 200


def test_psycopg_parses_each_statement_of_a_chat_turn_once(user):
    """psycopg keeps where a statement's placeholders are only for statements within its
    cache's limits (50 parameters by default); a new conversation's statement has more, so
    each chat turn parsed it again. Every statement a turn sends fits the limits now."""
    from psycopg import _queries

    sent = []

    def record(execute, sql, params, many, context):
        if params:
            sent.append((len(sql.encode()), len(params), sql[:40]))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        turn = turns.turn_answer(user=user, content="add a task to buy milk")
        turns.turn_enqueue(user=user, conversation_id=turn.conversation.pk, content="and eggs")
        turns.turn_answer(user=user, content="hello", conversation_id=turn.conversation.pk)

    assert sent
    too_big = [
        (size, params, start)
        for size, params, start in sent
        if size > _queries.MAX_CACHED_STATEMENT_LENGTH or params > _queries.MAX_CACHED_STATEMENT_PARAMS
    ]
    assert too_big == []
