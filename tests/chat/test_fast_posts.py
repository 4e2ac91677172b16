"""The write paths served async (config/api/fast.py, ``FastPost``): ``POST …/messages``
(202), ``POST /api/v1/chat`` and the legacy ``POST /api/{user_id}/chat``, driven through the
whole ASGI application as a server runs them. Their success path never reaches the DRF view;
everything else (a bad body, another content type, an invalid key) still does, and every
outcome is the DRF view's: bodies, statuses, headers, idempotency, the rate limit, the
errors the services raise, nothing stored when refused."""

import asyncio
import hashlib
import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache
from django.utils import timezone
from rest_framework.views import APIView

from accounts.models import Tenant
from chat.models import AgentRun, Task
from config.api.models import IdempotencyKey
from conversations.models import Conversation, Message
from tests.accounts.factories import UserFactory
from tests.conversations.factories import ConversationFactory
from tests.protection.test_fast_paths import DEAD_CACHE, asgi, token_for

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/api/v1/chat"
DRF_ACCEPT = (b"accept", b"application/json; q=1")  # DRF negotiates it as plain JSON; the fast path steps aside


def key(value: str) -> tuple[bytes, bytes]:
    return (b"idempotency-key", value.encode())


def payload(**fields) -> bytes:
    return json.dumps(fields).encode()


def body_of(answer) -> dict:
    return json.loads(answer[2])


def fingerprint(path: str, body: bytes) -> str:
    """config.api.idempotency._fingerprint of a POST without a query string."""
    digest = hashlib.sha256()
    for part in ("POST", path.rstrip("/"), ""):
        digest.update(part.encode())
        digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


@database_sync_to_async
def caller(**kwargs):
    user = UserFactory(**kwargs)
    conversation = ConversationFactory(owner=user)
    return user, token_for(user), conversation


@database_sync_to_async
def count(model, **filters) -> int:
    return model.objects.filter(**filters).count()


def messages_path(conversation) -> str:
    return f"/api/v1/conversations/{conversation.pk}/messages"


# ----------------------------------------------------------------- served without DRF


async def test_the_success_paths_never_reach_the_drf_view(monkeypatch):
    user, token, conversation = await caller()

    def refuse(*args, **kwargs):
        raise AssertionError("the DRF view ran")

    monkeypatch.setattr(APIView, "dispatch", refuse)
    posted = await asgi("POST", messages_path(conversation), token, body=payload(content="hello"))
    keyed = await asgi("POST", messages_path(conversation) + "/", token, body=payload(content="k"), headers=[key("k1")])
    replayed = await asgi(
        "POST", messages_path(conversation) + "/", token, body=payload(content="k"), headers=[key("k1")]
    )
    chat = await asgi("POST", CHAT, token, body=payload(message="add a task to buy milk"))
    legacy = await asgi("POST", f"/api/{user.pk}/chat/", token, body=payload(message="what are my tasks"))

    assert [posted[0], keyed[0], replayed[0], chat[0], legacy[0]] == [202, 202, 202, 200, 200]
    assert replayed[2] == keyed[2] and replayed[1]["idempotent-replayed"] == "true"
    assert await count(Message, conversation=conversation, role="user") == 2


# ------------------------------------------------------------------ 202: the contract


async def test_a_202_is_the_drf_views_response():
    user, token, conversation = await caller()

    fast = await asgi("POST", messages_path(conversation), token, body=payload(content="first"))
    drf = await asgi("POST", messages_path(conversation), token, body=payload(content="second"), headers=[DRF_ACCEPT])

    assert (fast[0], drf[0]) == (202, 202)
    for name in ("content-type", "allow"):
        assert fast[1][name] == drf[1][name], name
    assert fast[1]["content-type"] == "application/json"
    assert int(fast[1]["x-ratelimit-remaining"]) == int(drf[1]["x-ratelimit-remaining"]) + 1
    fast_body, drf_body = body_of(fast), body_of(drf)
    assert fast_body.keys() == drf_body.keys() == {"message", "run"}
    assert fast_body["message"].keys() == drf_body["message"].keys()
    assert fast_body["run"].keys() == drf_body["run"].keys()
    # (Celery is eager in tests: the agent's reply to the first took seq 2.)
    assert (fast_body["message"]["seq"], drf_body["message"]["seq"]) == (1, 3)
    assert (fast_body["message"]["content"], fast_body["message"]["role"]) == ("first", "user")
    assert fast_body["run"]["trigger_message_id"] == fast_body["message"]["id"]
    # The bytes are what DRF's renderer makes of the same body.
    assert fast[2] == json.dumps(fast_body, separators=(",", ":"), ensure_ascii=False).encode()
    assert await count(AgentRun, conversation=conversation) == 2


async def test_a_resent_client_message_id_is_200_with_the_stored_turn():
    user, token, conversation = await caller()
    body = payload(content="once", client_message_id="c-1")

    first = await asgi("POST", messages_path(conversation), token, body=body)
    again = await asgi("POST", messages_path(conversation), token, body=body)

    assert (first[0], again[0]) == (202, 200)
    assert body_of(again)["message"]["id"] == body_of(first)["message"]["id"]
    assert body_of(again)["run"]["id"] == body_of(first)["run"]["id"]
    assert await count(Message, conversation=conversation, role="user") == 1
    assert await count(AgentRun, conversation=conversation) == 1


# ------------------------------------------------------------------------ idempotency


async def test_an_idempotency_key_replays_refuses_another_body_and_creates_one_thing(real_stack):
    user, token, conversation = await caller()
    path, body = messages_path(conversation), payload(content="keyed")

    first = await asgi("POST", path, token, body=body, headers=[key("one")])
    from_copy = await asgi("POST", path, token, body=body, headers=[key("one")])
    await database_sync_to_async(cache.delete_pattern)("idempotency:*")  # the Redis copy gone: the row answers
    from_row = await asgi("POST", path, token, body=body, headers=[key("one")])
    other = await asgi("POST", path, token, body=payload(content="another"), headers=[key("one")])

    assert first[0] == 202 and "idempotent-replayed" not in first[1]
    for replay in (from_copy, from_row):
        assert (replay[0], replay[2], replay[1]["idempotent-replayed"]) == (202, first[2], "true")
        assert replay[1]["allow"] == first[1]["allow"]
    assert other[0] == 422 and body_of(other)["error"]["code"] == "idempotency_key_mismatch"
    assert other[1]["allow"] == first[1]["allow"]
    assert await count(Message, conversation=conversation, role="user") == 1


async def test_keyed_posts_replay_on_the_embedded_defaults_local_memory_cache(settings):
    # The embedded default (no REDIS_URL) keeps its cache in local memory: no Redis holds a
    # copy of a stored response, and the row answers the replay. Asking for a Redis client
    # there anyway was a 500 on every POST with an Idempotency-Key under ASGI.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    user, token, conversation = await caller()
    path, body = messages_path(conversation), payload(content="embedded")
    created = payload(title="embedded")

    answers = [await asgi("POST", path, token, body=body, headers=[key("emb-msg")]) for _ in range(2)]
    conversations = [
        await asgi("POST", "/api/v1/conversations/", token, body=created, headers=[key("emb-conv")]) for _ in range(2)
    ]
    chats = [
        await asgi("POST", CHAT, token, body=payload(message="hello"), headers=[key("emb-chat")]) for _ in range(2)
    ]

    for first, replay, status in (answers + [202], conversations + [201], chats + [200]):
        assert (first[0], replay[0]) == (status, status), (first, replay)
        assert replay[2] == first[2] and replay[1]["idempotent-replayed"] == "true"
    assert await count(Message, conversation=conversation, role="user") == 1
    assert await count(Conversation, title="embedded") == 1


async def test_two_concurrent_posts_with_one_key_create_one_message(real_stack):
    user, token, conversation = await caller()
    path, body = messages_path(conversation), payload(content="twice at once")

    answers = await asyncio.gather(*(asgi("POST", path, token, body=body, headers=[key("race")]) for _ in range(2)))

    statuses = sorted(status for status, _, _ in answers)
    assert statuses in ([202, 202], [202, 409]), statuses
    if statuses == [202, 202]:  # the second waited for the first and replayed it
        assert answers[0][2] == answers[1][2]
        assert sorted(a[1].get("idempotent-replayed", "") for a in answers) == ["", "true"]
    assert await count(Message, conversation=conversation, role="user") == 1


async def test_a_key_still_in_flight_is_409_and_runs_nothing(settings):
    settings.IDEMPOTENCY_WAIT_SECONDS = 0
    user, token, conversation = await caller()
    path, body = messages_path(conversation), payload(content="in flight")
    now = timezone.now()
    await database_sync_to_async(IdempotencyKey.objects.create)(
        tenant_id=user.tenant_id,
        user_id=user.pk,
        key="busy",
        fingerprint=fingerprint(path, body),
        method="POST",
        path=path,
        lock_token="someone-else",
        locked_at=now,
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )

    busy = await asgi("POST", path, token, body=body, headers=[key("busy")])

    assert busy[0] == 409 and body_of(busy)["error"]["code"] == "idempotency_key_in_use"
    assert busy[1]["retry-after"] == "1"
    assert await count(Message, conversation=conversation) == 0


async def test_an_invalid_key_is_drfs_400():
    user, token, conversation = await caller()

    answer = await asgi("POST", messages_path(conversation), token, body=payload(content="x"), headers=[key(" bad")])

    assert answer[0] == 400 and body_of(answer)["error"]["code"] == "invalid_idempotency_key"
    assert await count(Message, conversation=conversation) == 0


# ----------------------------------------------------------------------------- errors


async def test_refused_bodies_get_the_envelope_store_nothing_and_free_the_key():
    user, token, conversation = await caller()
    path = messages_path(conversation)

    blank = await asgi("POST", path, token, body=payload(content="   "), headers=[key("fix-me")])
    broken = await asgi("POST", path, token, body=b'{"content": ', headers=[key("fix-me")])
    # Another content type goes to DRF's parsing (here an empty body: nothing to parse).
    not_json = await asgi("POST", path, token, headers=[(b"content-type", b"text/plain"), (b"content-length", b"0")])
    fixed = await asgi("POST", path, token, body=payload(content="fixed"), headers=[key("fix-me")])

    assert blank[0] == 400 and body_of(blank)["error"]["code"] == "validation_error"
    assert "content" in body_of(blank)["error"]["details"]
    assert blank[1]["x-ratelimit-remaining"] and blank[1]["content-type"] == "application/json"
    assert broken[0] == 400 and body_of(broken)["error"]["code"] == "parse_error"
    assert not_json[0] == 400 and "content" in body_of(not_json)["error"]["details"]
    assert fixed[0] == 202  # the key was released by the refusals
    assert await count(Message, conversation=conversation, role="user") == 1


async def test_a_foreign_conversation_is_404_and_frees_the_key():
    user, token, _ = await caller()
    _, _, foreign = await caller()  # another tenant's

    answer = await asgi("POST", messages_path(foreign), token, body=payload(content="hi"), headers=[key("f")])
    chat = await asgi("POST", CHAT, token, body=payload(message="hi", conversation_id=foreign.pk))

    assert answer[0] == 404 and body_of(answer)["error"]["code"] == "not_found"
    assert answer[1]["content-type"] == "application/json" and answer[1]["allow"]
    assert body_of(answer)["error"]["request_id"] == answer[1]["x-request-id"]
    assert chat[0] == 404 and body_of(chat)["error"]["code"] == "not_found"
    assert await count(Message, conversation=foreign) == 0
    assert await count(IdempotencyKey, user_id=user.pk) == 0


# ------------------------------------------------------------------------------- chat


async def test_a_chat_turn_is_answered_with_its_tool_calls():
    user, token, _ = await caller()

    answer = await asgi("POST", CHAT, token, body=payload(message="add a task to buy milk"))
    drf = await asgi("POST", CHAT + "/", token, body=payload(message="what are my tasks"), headers=[DRF_ACCEPT])

    assert answer[0] == 200 and answer[1]["content-type"] == "application/json"
    body = body_of(answer)
    assert body.keys() == body_of(drf).keys()
    assert [call["name"] for call in body["tool_calls"]] == ["add_task"]
    assert body["response"] and body["reply_id"] and body["usage"]["total_tokens"] > 0
    assert answer[1]["allow"] == drf[1]["allow"]
    assert await count(Task, owner=user, title="buy milk") == 1
    assert await count(Message, conversation_id=body["conversation_id"]) == 2


async def test_the_legacy_chat_names_its_tools_and_refuses_another_user():
    user, token, _ = await caller()

    answer = await asgi("POST", f"/api/{user.pk}/chat", token, body=payload(message="add a task to buy milk"))
    refused = await asgi(
        "POST", f"/api/{user.pk + 1000}/chat", token, body=payload(message="add a task"), headers=[key("legacy")]
    )

    assert answer[0] == 200 and body_of(answer)["tool_calls"] == ["add_task"]
    assert refused[0] == 403 and body_of(refused)["error"]["code"] == "permission_denied"
    assert await count(Message, conversation__owner=user) == 2  # the one turn: message and reply
    assert await count(IdempotencyKey, user_id=user.pk) == 0


async def test_a_bound_conversation_is_409_for_chat_and_stores_nothing():
    user, token, _ = await caller()
    bound = await database_sync_to_async(ConversationFactory)(owner=user, channel=Conversation.Channel.WHATSAPP)

    answer = await asgi("POST", CHAT, token, body=payload(message="hi", conversation_id=bound.pk), headers=[key("b")])

    assert answer[0] == 409 and body_of(answer)["error"]["code"] == "conversation_bound"
    assert await count(Message, conversation=bound) == 0
    assert await count(IdempotencyKey, user_id=user.pk) == 0


async def test_an_unavailable_agent_is_503_and_keeps_the_message(fake_openai):
    fake_openai.fail(500)
    user, token, _ = await caller()

    answer = await asgi("POST", CHAT, token, body=payload(message="hi"), headers=[key("agent-down")])

    error = body_of(answer)["error"]
    assert answer[0] == 503 and error["code"] == "agent_unavailable"
    message = await database_sync_to_async(Message.objects.get)(conversation__owner=user)
    assert (message.role, message.content, error["details"]["message_id"]) == ("user", "hi", message.pk)
    assert await count(IdempotencyKey, user_id=user.pk) == 0  # a retry is a new attempt


# ------------------------------------------------------------------------- rate limit


async def test_over_the_limit_is_the_429_envelope_and_stores_nothing(settings):
    settings.RATE_LIMIT_FREE = 2
    user, token, conversation = await caller(tenant__tier=Tenant.Tier.FREE)

    answers = [await asgi("POST", messages_path(conversation), token, body=payload(content="n")) for _ in range(2)]
    chat = await asgi("POST", CHAT, token, body=payload(message="hi"))

    assert [status for status, _, _ in answers] == [202, 202]
    assert [headers["x-ratelimit-remaining"] for _, headers, _ in answers] == ["1", "0"]
    assert chat[0] == 429 and body_of(chat)["error"]["code"] == "rate_limited"
    assert int(chat[1]["retry-after"]) >= 1 and chat[1]["x-ratelimit-remaining"] == "0"
    assert chat[1]["content-type"] == "application/json" and chat[1]["allow"]
    assert await count(Message, conversation__owner=user, role="user") == 2


async def test_a_stopped_redis_fails_open_uncounted(settings):
    user, token, conversation = await caller()
    settings.CACHES = DEAD_CACHE

    answer = await asgi("POST", messages_path(conversation), token, body=payload(content="redis down"))

    assert answer[0] == 202 and body_of(answer)["message"]["content"] == "redis down"
    assert "x-ratelimit-limit" not in answer[1]


@pytest.mark.parametrize("path", ["messages", CHAT])
async def test_a_stopped_redis_refuses_when_fail_closed(settings, path):
    user, token, conversation = await caller()
    settings.CACHES = DEAD_CACHE
    settings.RATELIMIT_FAIL_OPEN = False
    body = payload(content="no") if path == "messages" else payload(message="no")

    answer = await asgi("POST", messages_path(conversation) if path == "messages" else path, token, body=body)

    assert answer[0] == 429 and body_of(answer)["error"]["code"] == "rate_limited"
    assert await count(Message, conversation__owner=user) == 0
