import threading

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from chat.models import AgentRun, Task
from chat.services import runs, turns
from chat.tasks import execute_run, sweep_stuck_runs
from conversations.models import Message
from tests.accounts.factories import TenantFactory, UserFactory
from tests.chat.streams import access_token, communicator, parse_sse, read_sse, receive_until
from tests.conversations.factories import ConversationFactory, add_messages
from tests.helpers import assert_error

# ---------------------------------------------------------------- 202 path


@pytest.mark.django_db
def test_post_message_answers_202_and_the_worker_stores_the_reply(auth_api, user, django_capture_on_commit_callbacks):
    conversation = ConversationFactory(owner=user)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = auth_api.post(
            f"/api/v1/conversations/{conversation.id}/messages", {"content": "add a task to buy milk"}, format="json"
        )
    queued_before_commit = AgentRun.objects.get().status
    for callback in callbacks:  # the commit: events go out and the task is enqueued
        callback()

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["message"]["seq"] == 1 and body["message"]["role"] == "user"
    assert body["run"]["status"] == "queued"
    assert queued_before_commit == "queued"
    run = AgentRun.objects.get(pk=body["run"]["id"])
    assert run.status == "completed" and run.reply_message.seq == 2
    assert Task.objects.get().title == "buy milk"


@pytest.mark.django_db
def test_post_message_enqueues_nothing_before_commit(auth_api, user, django_capture_on_commit_callbacks):
    conversation = ConversationFactory(owner=user)

    with django_capture_on_commit_callbacks(execute=False):
        response = auth_api.post(f"/api/v1/conversations/{conversation.id}/messages", {"content": "hi"}, format="json")

    assert response.status_code == 202
    assert AgentRun.objects.get().status == "queued"  # nothing ran: the commit never happened


@pytest.mark.django_db
def test_post_message_resend_with_client_message_id_is_not_stored_twice(
    auth_api, user, django_capture_on_commit_callbacks
):
    conversation = ConversationFactory(owner=user)
    url = f"/api/v1/conversations/{conversation.id}/messages"

    with django_capture_on_commit_callbacks(execute=True):
        first = auth_api.post(url, {"content": "hi", "client_message_id": "c-9"}, format="json")
        again = auth_api.post(url, {"content": "hi", "client_message_id": "c-9"}, format="json")

    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["message"]["id"] == again.json()["message"]["id"]
    assert Message.objects.filter(role="user").count() == 1
    assert AgentRun.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{}, {"content": ""}, {"content": "x" * 10_001}])
def test_post_message_bad_body_is_400_and_stores_nothing(auth_api, user, body):
    conversation = ConversationFactory(owner=user)

    assert_error(
        auth_api.post(f"/api/v1/conversations/{conversation.id}/messages", body, format="json"), 400, "validation_error"
    )
    assert Message.objects.count() == 0


@pytest.mark.django_db
def test_post_message_into_foreign_conversation_is_404(auth_api):
    theirs = ConversationFactory(owner=UserFactory(tenant=TenantFactory()))

    assert_error(
        auth_api.post(f"/api/v1/conversations/{theirs.id}/messages", {"content": "hi"}, format="json"), 404, "not_found"
    )
    assert Message.objects.count() == 0


# ---------------------------------------------------------------- Celery task


@pytest.mark.django_db
def test_task_retries_transient_provider_errors_then_succeeds(user, fake_openai, settings):
    settings.AGENT_RETRY_BACKOFF_SECONDS = 0
    turn = turns.turn_begin(user=user, content="hi")
    fake_openai.fail(503)
    fake_openai.reply("second time lucky")

    execute_run.apply(args=[turn.run.pk])

    run = AgentRun.objects.get(pk=turn.run.pk)
    assert (run.status, run.attempts) == ("completed", 2)
    assert run.reply_message.content == "second time lucky"


@pytest.mark.django_db
def test_task_fails_the_run_after_its_attempts(user, fake_openai, settings):
    settings.AGENT_RETRY_BACKOFF_SECONDS = 0
    settings.AGENT_MAX_ATTEMPTS = 2
    turn = turns.turn_begin(user=user, content="hi")
    fake_openai.fail(500)
    fake_openai.fail(500)

    execute_run.apply(args=[turn.run.pk])

    run = AgentRun.objects.get(pk=turn.run.pk)
    assert (run.status, run.attempts) == ("failed", 2)
    assert Message.objects.filter(role="user").count() == 1


@pytest.mark.django_db
def test_task_does_not_run_a_settled_run_twice(user):
    turn = turns.turn_begin(user=user, content="add a task to once")
    execute_run.apply(args=[turn.run.pk])

    execute_run.apply(args=[turn.run.pk])  # a redelivery

    assert Task.objects.count() == 1
    assert Message.objects.filter(role="assistant").count() == 1


@pytest.mark.django_db
def test_task_redelivered_after_lost_workers_fails_the_run_once_its_attempts_are_used(user, settings):
    # reject_on_worker_lost redelivers without counting a Celery retry; the run counts.
    turn = turns.turn_begin(user=user, content="add a task to crash again")
    AgentRun.objects.filter(pk=turn.run.pk).update(status="running", attempts=settings.AGENT_MAX_ATTEMPTS)

    execute_run.apply(args=[turn.run.pk])

    run = AgentRun.objects.get(pk=turn.run.pk)
    assert (run.status, run.attempts) == ("failed", settings.AGENT_MAX_ATTEMPTS)
    assert "lost" in run.error
    assert Task.objects.count() == 0 and Message.objects.filter(role="assistant").count() == 0


@pytest.mark.django_db
def test_sweep_requeues_a_run_whose_worker_died_and_fails_an_exhausted_one(
    user, settings, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    long_ago = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 120)
    orphan = turns.turn_begin(user=user, content="add a task to survive").run
    exhausted = turns.turn_begin(user=user, content="hello").run
    AgentRun.objects.filter(pk=orphan.pk).update(status="running", started_at=long_ago, attempts=1)
    AgentRun.objects.filter(pk=exhausted.pk).update(
        status="running", started_at=long_ago, attempts=settings.AGENT_MAX_ATTEMPTS
    )

    with django_capture_on_commit_callbacks(execute=True):
        result = sweep_stuck_runs.apply().get()

    assert result == {"requeued": [orphan.pk], "failed": [exhausted.pk]}
    assert AgentRun.objects.get(pk=orphan.pk).status == "completed"
    assert Task.objects.get().title == "survive"
    failed = AgentRun.objects.get(pk=exhausted.pk)
    assert failed.status == "failed" and "lost" in failed.error


@pytest.mark.django_db
def test_cancelled_turn_is_marked_failed_and_stores_no_reply(user):
    turn = turns.turn_begin(user=user, content="hello")
    cancel = threading.Event()
    cancel.set()

    result = runs.run_execute(run_id=turn.run.pk, delivery=runs.Delivery.in_request(listener_gone=cancel))

    assert result.outcome == runs.Outcome.CANCELLED
    assert result.run.status == "failed" and result.run.error.startswith("cancelled")
    assert Message.objects.filter(role="assistant").count() == 0


# ---------------------------------------------------------------- SSE


async def _auth(user) -> dict:
    return {"Authorization": f"Bearer {await access_token(user)}"}


@pytest.mark.django_db(transaction=True)
async def test_chat_stream_event_order_for_a_tool_calling_turn():
    user = await database_sync_to_async(UserFactory)()
    client = AsyncClient()

    response = await client.post(
        "/api/v1/chat/stream",
        {"message": "add a task to buy milk"},
        content_type="application/json",
        headers=await _auth(user),
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache" and response["X-Accel-Buffering"] == "no"
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert body.startswith(": open\n\n")
    events = parse_sse(body)
    kinds = [e["event"] for e in events]
    assert kinds[:4] == ["message.created", "run.started", "tool.call", "tool.result"]
    assert kinds[-2:] == ["message.completed", "run.completed"]
    assert set(kinds[4:-2]) == {"message.delta"}
    deltas = "".join(e["data"]["data"]["delta"] for e in events if e["event"] == "message.delta")
    completed = events[-2]
    assert deltas == completed["data"]["data"]["content"]
    assert (events[0]["id"], completed["id"]) == ("1", "2")
    assert all(e["id"] is None for e in events[1:-2])
    assert events[2]["data"]["data"]["name"] == "add_task"
    assert await database_sync_to_async(Task.objects.filter(owner=user, title="buy milk").exists)()


@pytest.mark.django_db(transaction=True)
async def test_chat_stream_errors_are_envelopes():
    user = await database_sync_to_async(UserFactory)()
    client = AsyncClient()

    unauthenticated = await client.post("/api/v1/chat/stream", {"message": "hi"}, content_type="application/json")
    empty = await client.post(
        "/api/v1/chat/stream", {"message": ""}, content_type="application/json", headers=await _auth(user)
    )
    missing = await client.post(
        "/api/v1/chat/stream",
        {"message": "hi", "conversation_id": 424242},
        content_type="application/json",
        headers=await _auth(user),
    )
    wrong_method = await client.get("/api/v1/chat/stream", headers=await _auth(user))

    assert_error(unauthenticated, 401, "not_authenticated")
    assert_error(empty, 400, "validation_error")
    assert_error(missing, 404, "not_found")
    assert_error(wrong_method, 405, "method_not_allowed")


@pytest.mark.django_db(transaction=True)
async def test_chat_stream_provider_failure_streams_run_failed_and_keeps_the_message(fake_openai):
    user = await database_sync_to_async(UserFactory)()
    fake_openai.fail(500)

    response = await AsyncClient().post(
        "/api/v1/chat/stream", {"message": "hi"}, content_type="application/json", headers=await _auth(user)
    )
    events = parse_sse(b"".join([c async for c in response.streaming_content]).decode())

    assert [e["event"] for e in events] == ["message.created", "run.started", "run.failed"]
    assert await database_sync_to_async(Message.objects.filter(role="user").count)() == 1


@pytest.mark.django_db(transaction=True)
async def test_conversation_events_resume_from_last_event_id_then_go_live():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    await database_sync_to_async(add_messages)(conversation, 5)

    response = await AsyncClient().get(
        f"/api/v1/conversations/{conversation.id}/events", headers={**(await _auth(user)), "Last-Event-ID": "3"}
    )

    replayed = await read_sse(response, until=lambda ev: len(ev) == 2, close=False)
    await database_sync_to_async(add_messages)(conversation, 1)  # after the replay: only live
    live = await read_sse(response, until=lambda ev: len(ev) == 1)
    events = replayed + live

    assert [int(e["id"]) for e in events] == [4, 5, 6]
    assert [e["event"] for e in events] == ["message.created"] * 3


@pytest.mark.django_db(transaction=True)
async def test_conversation_events_of_a_foreign_conversation_is_404():
    user = await database_sync_to_async(UserFactory)()
    theirs = await database_sync_to_async(ConversationFactory)()

    response = await AsyncClient().get(f"/api/v1/conversations/{theirs.id}/events", headers=await _auth(user))

    assert_error(response, 404, "not_found")


# ---------------------------------------------------------------- WebSocket


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("token", ["", "not-a-token"])
async def test_websocket_without_a_valid_token_closes_4401(token):
    conversation = await database_sync_to_async(ConversationFactory)()
    comm = await communicator(None, conversation.id, token=token or None)

    connected, _ = await comm.connect()

    assert connected
    assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_websocket_foreign_unknown_and_non_participant_close_codes():
    user = await database_sync_to_async(UserFactory)()
    foreign = await database_sync_to_async(ConversationFactory)()
    colleague = await database_sync_to_async(UserFactory)(tenant=user.tenant)
    not_mine = await database_sync_to_async(ConversationFactory)(owner=colleague)

    codes = []
    for conversation_id in (foreign.id, 999999, not_mine.id):
        comm = await communicator(user, conversation_id)
        await comm.connect()
        codes.append((await comm.receive_output(timeout=5))["code"])
        await comm.disconnect()

    assert codes == [4404, 4404, 4403]


@pytest.mark.django_db(transaction=True)
async def test_websocket_token_in_subprotocol_header():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    comm = await communicator(user, conversation.id, subprotocols=["bearer", await access_token(user)])

    connected, subprotocol = await comm.connect()
    await comm.send_json_to({"type": "ping", "ref": "p1"})

    assert connected and subprotocol == "bearer"
    assert await comm.receive_json_from(timeout=5) == {"type": "pong", "seq": None, "data": {"ref": "p1"}}
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_two_clients_both_receive_a_message_and_the_agent_reply():
    owner = await database_sync_to_async(UserFactory)()
    guest = await database_sync_to_async(UserFactory)(tenant=owner.tenant)
    conversation = await database_sync_to_async(ConversationFactory)(owner=owner)
    await database_sync_to_async(conversation.participants.add)(guest)
    alice, bob = await communicator(owner, conversation.id), await communicator(guest, conversation.id)
    assert (await alice.connect())[0] and (await bob.connect())[0]

    await bob.send_json_to({"type": "message.send", "content": "add a task to buy milk", "ref": "r1"})

    is_reply = lambda f: f["type"] == "message.completed"  # noqa: E731
    alice_frames = await receive_until(alice, is_reply)
    bob_frames = await receive_until(bob, is_reply)
    for frames in (alice_frames, bob_frames):
        stored = [(f["type"], f["seq"]) for f in frames if f["seq"] is not None]
        assert stored == [("message.created", 1), ("message.completed", 2)]
        created = next(f for f in frames if f["type"] == "message.created")
        assert created["data"]["sender_id"] == guest.id
    assert bob_frames[0]["type"] == "message.ack" and bob_frames[0]["data"]["ref"] == "r1"
    assert "buy milk" in alice_frames[-1]["data"]["content"]
    await alice.disconnect()
    await bob.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_websocket_resume_gets_exactly_the_missed_messages():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    await database_sync_to_async(add_messages)(conversation, 4)

    comm = await communicator(user, conversation.id, query="after_seq=2")
    await comm.connect()
    replayed = [await comm.receive_json_from(timeout=5) for _ in range(2)]
    await database_sync_to_async(add_messages)(conversation, 1)
    live = await comm.receive_json_from(timeout=5)

    assert [f["seq"] for f in replayed] == [3, 4]
    assert live["seq"] == 5
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_websocket_read_typing_and_bad_frames():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    (message,) = await database_sync_to_async(add_messages)(conversation, 1)
    comm = await communicator(user, conversation.id)
    await comm.connect()

    await comm.send_json_to({"type": "typing", "is_typing": True})
    typing = await comm.receive_json_from(timeout=5)
    await comm.send_json_to({"type": "message.read", "message_id": message.id})
    status = await comm.receive_json_from(timeout=5)
    await comm.send_json_to({"type": "message.read", "message_id": 999999})
    missing = await comm.receive_json_from(timeout=5)
    await comm.send_json_to({"type": "launch"})
    unknown = await comm.receive_json_from(timeout=5)
    await comm.send_json_to({"type": "message.send", "content": ""})
    empty = await comm.receive_json_from(timeout=5)

    assert typing == {"type": "typing", "seq": None, "data": {"user_id": user.id, "is_typing": True}}
    assert status["type"] == "message.status" and status["data"]["status"] == "read"
    assert status["seq"] is None and status["data"]["seq"] == message.seq  # the SSE id never moves back
    assert missing["type"] == "error" and missing["data"]["code"] == "not_found"
    assert unknown["data"]["code"] == "unknown_type"
    assert empty["data"]["code"] == "validation_error"
    assert await database_sync_to_async(Message.objects.filter(conversation=conversation).count)() == 1
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_websocket_malformed_frames_get_errors_and_keep_the_connection():
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    comm = await communicator(user, conversation.id)
    await comm.connect()

    await comm.send_json_to({"type": "message.read", "message_id": "abc"})
    bad_id = await comm.receive_json_from(timeout=5)
    await comm.send_json_to({"type": "message.send", "content": "hi", "client_message_id": "x" * 101})
    long_id = await comm.receive_json_from(timeout=5)
    await comm.send_json_to(["not", "an", "object"])
    not_object = await comm.receive_json_from(timeout=5)
    await comm.send_json_to({"type": "ping"})
    pong = await comm.receive_json_from(timeout=5)

    assert bad_id["data"]["code"] == "validation_error" and "message_id" in bad_id["data"]["details"]
    assert long_id["data"]["code"] == "validation_error" and "client_message_id" in long_id["data"]["details"]
    assert not_object["data"]["code"] == "invalid_frame"
    assert pong["type"] == "pong"
    assert await database_sync_to_async(Message.objects.count)() == 0
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_live_message_that_skips_ahead_brings_the_ones_in_between():
    from conversations.events import event_frame
    from conversations.serializers import message_data
    from conversations.subscriptions import SeqFilter

    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    messages = await database_sync_to_async(add_messages)(conversation, 3)
    seq_filter = SeqFilter(conversation.id, last_seq=1)
    live = [event_frame("message.created", message_data(m), m.seq) for m in messages]

    # seq 3's event arrives before seq 2's (published by two processes)
    first = await seq_filter.admit_live(live[2])
    late = await seq_filter.admit_live(live[1])
    again = await seq_filter.admit_live(live[2])

    assert [f["seq"] for f in first] == [2, 3]
    assert late == [] and again == []
