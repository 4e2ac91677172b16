"""Bad input is a 400 envelope that stores nothing, never a 500.

Run on PostgreSQL too (CI): it refuses NUL in text and jsonb, which SQLite stores happily,
so these tests are plain tests meant to pass on both back ends.
"""

import base64
import time

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient
from rest_framework.exceptions import ParseError
from rest_framework.test import APIClient

from accounts.models import Tenant, User
from audits.models import AuditRecord
from chat.models import AgentRun, Task
from config.api import parsers
from config.api.models import IdempotencyKey
from config.api.parsers import MAX_JSON_DEPTH
from conversations.models import Conversation, Message
from tests.accounts.factories import UserFactory
from tests.chat.factories import TaskFactory
from tests.chat.streams import access_token
from tests.conversations.factories import ConversationFactory, add_messages
from tests.helpers import assert_envelope, client_for

MODELS = (Tenant, User, Conversation, Message, AgentRun, Task, AuditRecord, IdempotencyKey)


def row_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in MODELS}


def nested(depth: int) -> str:
    return '{"a":' * (depth - 1) + "[1]" + "}" * (depth - 1)


# Raw JSON fragments that Python's json accepts but our API must refuse.
BAD_FRAGMENTS = {
    "nul_in_string": '"a\\u0000b"',
    "nul_in_key": '{"a\\u0000b": 1}',
    "lone_high_surrogate": '"x\\ud800y"',
    "lone_low_surrogate_key": '{"\\udfff": 1}',
    "overflowing_number": "1e400",
    "overflowing_negative_number": "-1e400",
    "nan": "NaN",
    "infinity": "Infinity",
    "negative_infinity": "-Infinity",
    "nested_5000_deep": "[" * 5000 + "]" * 5000,
    "nested_past_the_bound": nested(MAX_JSON_DEPTH + 1),
}

# (name, method, path, body with {bad} where the fragment goes, anonymous?)
JSON_ENDPOINTS = [
    ("register", "post", "/api/v1/auth/register", '{"email": "a@example.com", "password": "pw-12345678", '
     '"display_name": "A", "tenant_name": "T", "profile": {bad}}', True),
    ("token", "post", "/api/v1/auth/token", '{"email": "a@example.com", "password": {bad}}', True),
    ("chat", "post", "/api/v1/chat", '{"message": "hi", "context": {bad}}', False),
    ("legacy_chat", "post", "/api/{user_id}/chat", '{"message": "hi", "context": {bad}}', False),
    ("conversation_create", "post", "/api/v1/conversations", '{"title": "t", "metadata": {"k": {bad}}}', False),
    ("conversation_update", "patch", "/api/v1/conversations/{conversation_id}", '{"metadata": {"k": {bad}}}', False),
    ("message_post", "post", "/api/v1/conversations/{conversation_id}/messages",
     '{"content": "hi", "attachments": [{"name": {bad}}]}', False),
    ("task_create", "post", "/api/v1/tasks", '{"title": "t", "note": {bad}}', False),
    ("audit_create", "post", "/api/v1/audits", '{"action": "custom.test", "details": {"k": {bad}}}', False),
    ("user_create", "post", "/api/v1/users", '{"email": "b@example.com", "password": "pw-12345678", '
     '"display_name": "B", "extra": {bad}}', False),
]  # fmt: skip


@pytest.fixture
def conversation(user):
    return ConversationFactory(owner=user, metadata={"kept": True})


def call(client, method, path, body, user, conversation):
    url = path.format(user_id=user.pk, conversation_id=conversation.pk)
    return getattr(client, method)(url, body, content_type="application/json")


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "method", "path", "template", "anonymous"), JSON_ENDPOINTS, ids=lambda v: v)
def test_bad_json_is_a_400_parse_error_and_stores_nothing(user, conversation, name, method, path, template, anonymous):
    # Every fragment on every endpoint (a loop, not a parameter: one user and conversation
    # per endpoint keeps the 110 cases fast).
    client = APIClient() if anonymous else client_for(user)
    client.raise_request_exception = False
    before = row_counts()

    for fragment_name, fragment in BAD_FRAGMENTS.items():
        response = call(client, method, path, template.replace("{bad}", fragment), user, conversation)

        assert response.status_code == 400, (fragment_name, response.content)
        error = assert_envelope(response, 400, "parse_error")
        assert error["message"].startswith("Invalid JSON"), (fragment_name, error)
        assert row_counts() == before, fragment_name
    conversation.refresh_from_db()
    assert conversation.metadata == {"kept": True}


@pytest.mark.django_db
def test_nesting_up_to_the_bound_is_accepted(auth_api):
    metadata = nested(MAX_JSON_DEPTH - 1)  # the body object is one more level

    response = auth_api.post(
        "/api/v1/conversations", f'{{"title": "deep", "metadata": {metadata}}}', content_type="application/json"
    )

    assert response.status_code == 201, response.content
    stored = Conversation.objects.get(title="deep").metadata
    depth = 1
    while isinstance(stored, dict):
        stored, depth = stored["a"], depth + 1
    assert (stored, depth) == ([1], MAX_JSON_DEPTH - 1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        '{"n": 1e16, "f": 0.1, "big": 123456789012345678901234567890}',
        '{"n": -1.5e300, "emoji": "\\ud83d\\ude00", "text": "caf\\u00e9", "escaped": "\\\\u0000"}',
    ],
)
def test_valid_numbers_and_surrogate_pairs_are_accepted(auth_api, body):
    response = auth_api.post(
        "/api/v1/audits", f'{{"action": "custom.numbers", "details": {body}}}', content_type="application/json"
    )

    assert response.status_code == 201, response.content
    assert AuditRecord.objects.filter(action="custom.numbers").count() == 1


@pytest.mark.parametrize("fragment", BAD_FRAGMENTS.values(), ids=BAD_FRAGMENTS.keys())
def test_loads_raises_a_parse_error_with_a_clear_message(fragment):
    # The function the WebSocket consumer calls: a ParseError (400 parse_error), nothing else.
    with pytest.raises(ParseError) as raised:
        parsers.loads(f'{{"data": {fragment}}}'.encode())

    assert str(raised.value.detail).startswith("Invalid JSON: ")


def test_loads_names_where_the_bad_string_is():
    with pytest.raises(ParseError, match=r"\['a'\]\[0\]\['b'\] contains a NUL"):
        parsers.loads('{"a": [{"b": "x\\u0000"}]}')


# ----------------------------------------------------------------- strings in typed fields

STRING_FIELD_CASES = [
    ("/api/v1/chat", {"message": "a\u0000b"}, "message"),
    ("/api/v1/chat", {"message": "a\ud800"}, "message"),
    ("/api/v1/conversations", {"title": "a\u0000b"}, "title"),
    ("/api/v1/conversations/{conversation_id}/messages", {"content": "a\u0000b"}, "content"),
    ("/api/v1/tasks", {"title": "\u0000"}, "title"),
    ("/api/v1/audits", {"action": "custom.x", "resource_id": "a\u0000"}, "resource_id"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "payload", "field"), STRING_FIELD_CASES)
def test_nul_and_surrogates_in_string_fields_are_refused(auth_api, user, conversation, path, payload, field):
    import json

    before = row_counts()
    body = json.dumps(payload)  # ensure_ascii: NUL and the surrogate travel as \u escapes

    response = call(auth_api, "post", path, body, user, conversation)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in ("parse_error", "validation_error")
    assert row_counts() == before


# ----------------------------------------------------------------- chat body types

CHAT_PATHS = ["/api/v1/chat", "/api/{user_id}/chat"]
BAD_CHAT_BODIES = {
    "conversation_id_zero": {"message": "hi", "conversation_id": 0},
    "conversation_id_negative": {"message": "hi", "conversation_id": -3},
    "conversation_id_too_large": {"message": "hi", "conversation_id": 2**63},
    "conversation_id_text": {"message": "hi", "conversation_id": "abc"},
    "conversation_id_bool": {"message": "hi", "conversation_id": True},
    "conversation_id_fraction": {"message": "hi", "conversation_id": 1.5},
    "message_number": {"message": 12345},
    "message_bool": {"message": True},
    "message_list": {"message": ["hi"]},
    "message_object": {"message": {"text": "hi"}},
    "message_null": {"message": None},
    "body_not_an_object": ["hi"],
}


@pytest.mark.django_db
@pytest.mark.parametrize("body", BAD_CHAT_BODIES.values(), ids=BAD_CHAT_BODIES.keys())
@pytest.mark.parametrize("path", CHAT_PATHS)
def test_chat_refuses_bad_conversation_ids_and_non_string_messages(auth_api, user, conversation, path, body):
    before = row_counts()

    response = auth_api.post(path.format(user_id=user.pk), body, format="json")

    error = assert_envelope(response, 400, "validation_error")
    assert error["details"], error
    assert row_counts() == before


@pytest.mark.django_db
def test_chat_accepts_a_positive_conversation_id(auth_api, conversation):
    response = auth_api.post("/api/v1/chat", {"message": "hi", "conversation_id": conversation.pk}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["conversation_id"] == conversation.pk


@pytest.mark.django_db(transaction=True)
async def test_chat_stream_refuses_bad_json_and_bad_fields_and_stores_nothing():
    user = await database_sync_to_async(UserFactory)()
    headers = {"Authorization": f"Bearer {await access_token(user)}"}
    client = AsyncClient()
    bodies = [('{"message": "hi", "context": {bad}}', f) for f in BAD_FRAGMENTS.values()]
    bodies = [(template.replace("{bad}", fragment), "parse_error") for template, fragment in bodies]
    bodies += [(b, "parse_error") for b in ("{", "[1,", '{"message": "\\ud800"', b"\xff\xfe{}")]
    bodies += [('{"message": "a\\u0000b"}', "parse_error")]
    bodies += [(f'{{"message": {v}}}', "validation_error") for v in ("12345", "true", '["hi"]', "null")]
    bodies += [(f'{{"message": "hi", "conversation_id": {v}}}', "validation_error") for v in ("0", "-1", "1.5", "true")]
    bodies += [("[]", "validation_error"), ('"hi"', "validation_error")]
    before = await database_sync_to_async(row_counts)()

    for body, code in bodies:
        response = await client.post("/api/v1/chat/stream", body, content_type="application/json", headers=headers)

        assert response.status_code == 400, (body[:80], response.content)
        assert response.json()["error"]["code"] == code, (body[:80], response.content)
    assert await database_sync_to_async(row_counts)() == before


# ----------------------------------------------------------------- query strings


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


BAD_CURSORS = {
    "not_base64": "!!!not-base64!!!",
    "base64_of_garbage": b64("garbage"),
    "base64_of_binary": b64(b"\xff\xfe\x00\x01"),
    "non_ascii": "caf\u00e9",
    "position_text": b64("p=not-a-position"),
    "position_huge_number": b64("p=" + "9" * 40),
    "position_nul": b64("p=1%00"),
    "position_far_date": b64("p=99999-01-01T00:00:00"),
    "offset_huge": b64("o=" + "9" * 5000),
    "offset_text": b64("o=x"),
    "reverse_text": b64("r=yes"),
    "huge": "A" * 20000,
}
LISTS = [
    "/api/v1/conversations",
    "/api/v1/conversations/{conversation_id}/messages",
    "/api/v1/conversations/{conversation_id}/turns",
    "/api/v1/tasks",
    "/api/v1/audits",
    "/api/v1/users",
]


@pytest.mark.django_db
@pytest.mark.parametrize("path", LISTS)
def test_forged_cursor_is_a_400_invalid_cursor(auth_api, user, conversation, path):
    auth_api.raise_request_exception = False
    add_messages(conversation, 2)
    url = path.format(conversation_id=conversation.pk)

    for cursor_name, cursor in BAD_CURSORS.items():
        response = auth_api.get(url, {"cursor": cursor})

        assert response.status_code == 400, (cursor_name, response.content)
        error = assert_envelope(response, 400, "invalid_cursor")
        assert "cursor" in error["message"].lower()


@pytest.mark.django_db
@pytest.mark.parametrize("path", LISTS)
def test_cursors_the_api_hands_out_still_work(auth_api, user, conversation, path):
    add_messages(conversation, 3)
    TaskFactory.create_batch(3, owner=user)
    url = path.format(conversation_id=conversation.pk)

    first = auth_api.get(url, {"page_size": 1})
    assert first.status_code == 200, first.content
    second = auth_api.get(first.json()["next"]) if first.json()["next"] else None

    if second is not None:
        assert second.status_code == 200, second.content
        assert second.json()["results"] != first.json()["results"]


QUERY_CASES = [
    ("/api/v1/conversations", {"search": "a\u0000b"}),
    ("/api/v1/audits", {"action": "custom.\u0000"}),
    ("/api/v1/audits", {"resource_id": "\u0000"}),
    ("/api/v1/audits", {"resource_type": "\u0000"}),
    ("/api/v1/audits/export", {"action": "\u0000"}),
    ("/api/v1/conversations/{conversation_id}/messages", {"after_seq": "9" * 30}),
    ("/api/v1/conversations/{conversation_id}/messages", {"after_seq": "-1"}),
    ("/api/v1/audits", {"actor": "9" * 30}),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "params"), QUERY_CASES)
def test_bad_query_strings_are_400_validation_errors(auth_api, conversation, path, params):
    auth_api.raise_request_exception = False

    response = auth_api.get(path.format(conversation_id=conversation.pk), params)

    assert_envelope(response, 400, "validation_error")


@pytest.mark.django_db
def test_datetimes_past_the_calendar_are_400(auth_api):
    auth_api.raise_request_exception = False

    response = auth_api.get("/api/v1/audits", {"since": "9999-12-31T23:59:59-05:00"})

    assert_envelope(response, 400, "validation_error")


HUGE_ID = "9" * 25


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/conversations/{HUGE_ID}",
        f"/api/v1/conversations/{HUGE_ID}/messages",
        f"/api/v1/conversations/{HUGE_ID}/turns",
        f"/api/v1/tasks/{HUGE_ID}",
        f"/api/v1/audits/{HUGE_ID}",
        f"/api/v1/users/{HUGE_ID}",
    ],
)
def test_ids_past_bigint_in_the_path_are_not_found(auth_api, path):
    auth_api.raise_request_exception = False

    response = auth_api.get(path)

    assert_envelope(response, 404, "not_found")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("header", [True, False])
async def test_event_stream_resume_point_past_bigint_is_400(header):
    user = await database_sync_to_async(UserFactory)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=user)
    headers = {"Authorization": f"Bearer {await access_token(user)}"}
    url = f"/api/v1/conversations/{conversation.pk}/events"
    if header:
        headers["Last-Event-ID"] = "9" * 25
    else:
        url += "?after_seq=" + "9" * 25

    response = await AsyncClient().get(url, headers=headers)

    try:
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "validation_error"
    finally:
        if response.streaming:
            await response.aclose() if hasattr(response, "aclose") else response.close()


@pytest.mark.parametrize(
    "body",
    [
        # More brackets than the depth bound, then an unterminated string full of escaped
        # quotes: the depth scan rescanned it from every quote (32 KB took 7 s of CPU).
        "[" * (MAX_JSON_DEPTH + 1) + '"' + '\\"' * 400_000,
        "[" * (MAX_JSON_DEPTH + 1) + '"' + "\\" * 800_000,
        '{"a": "' + '\\"' * 400_000 + '"' + "]" * (MAX_JSON_DEPTH + 1),
    ],
    ids=["unterminated-escaped-quotes", "unterminated-backslashes", "closed-then-brackets"],
)
def test_hostile_bodies_are_refused_in_linear_time(body):
    """A body near the upload limit is judged in milliseconds, whatever its shape (the
    bound is generous: before the fix such a body took hours)."""
    started = time.thread_time()  # CPU time: a loaded machine delays, it adds none
    with pytest.raises(parsers.InvalidJSON):
        parsers.loads(body)
    assert time.thread_time() - started < 1.0
