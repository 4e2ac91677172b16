"""The hot reads served async in front of their DRF views (config/api/fast.py) and the
per-process caller cache (config/api/callers.py): the same status, body and headers as the
DRF path, the same error envelopes and rate limit, and a deactivated user or tenant, or a
changed password, refused within the cache's bound. See docs/overhead.md, "Third round"."""

import asyncio
import json
import re

import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache

from accounts.models import Tenant, User
from audits import services as audit_services
from config.api.callers import CallerCache, callers
from config.asgi import application
from conversations.models import Conversation
from tests.accounts.factories import UserFactory
from tests.helpers import asgi_scope, assert_error, client_for

pytestmark = pytest.mark.django_db

ME = "/api/v1/auth/me"
AUDITS = "/api/v1/audits/"
# An Accept with a parameter: DRF's negotiation answers it exactly as plain JSON, and the
# fast path leaves it to the DRF view, so it is how a test reaches the DRF path.
DRF_PATH = {"HTTP_ACCEPT": "application/json; q=1"}
# The headers both paths must agree on (the request id differs per request).
COMPARED = ("Content-Type", "Allow", "X-RateLimit-Limit", "Retry-After", "Idempotent-Replayed", "Location")


def token_for(user) -> str:
    return client_for(user)._credentials["HTTP_AUTHORIZATION"][len("Bearer ") :]


async def asgi(method, path, token=None, *, query=b"", body=b"", headers=()):
    """One request through the whole ASGI application: (status, headers, body)."""
    if body:
        headers = [*headers, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = asgi_scope(path, token, method=method, scheme="http", query=query, headers=headers)
    sent, started, chunks, done = [], {}, [], asyncio.Event()

    async def receive():
        if not sent:
            sent.append(True)
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # Django listens for a disconnect while the view runs
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            started["status"] = message["status"]
            started["headers"] = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                done.set()

    await application(scope, receive, send)
    return started["status"], started["headers"], b"".join(chunks)


def same_response(fast, drf) -> None:
    assert fast.status_code == drf.status_code
    assert fast.content == drf.content
    for name in COMPARED:
        assert fast.get(name) == drf.get(name), name
    assert fast["X-RateLimit-Remaining"] == str(int(drf["X-RateLimit-Remaining"]) + 1)


# ------------------------------------------------------------ same contract as the DRF path


def test_me_is_the_drf_views_response(user):
    client = client_for(user)
    fast = client.get(ME)
    drf = client.get(ME, **DRF_PATH)

    same_response(fast, drf)
    assert fast.json()["user"]["id"] == user.pk
    assert fast["Allow"] == "GET, HEAD, OPTIONS"


def test_audit_pages_are_the_drf_views_responses(user):
    for index in range(25):
        audit_services.audit_custom_record(actor=user, action=f"custom.fast.e{index}")
    client = client_for(user)

    first, first_drf = client.get(AUDITS), client.get(AUDITS, **DRF_PATH)
    same_response(first, first_drf)
    assert len(first.json()["results"]) == 20

    cursor = first.json()["next"]
    assert cursor
    second, second_drf = client.get(cursor), client.get(cursor, **DRF_PATH)
    same_response(second, second_drf)
    assert second.json()["previous"]

    query = {"action": "custom.fast.*", "page_size": 5}
    filtered, filtered_drf = client.get(AUDITS, query), client.get(AUDITS, query, **DRF_PATH)
    same_response(filtered, filtered_drf)
    assert len(filtered.json()["results"]) == 5


@pytest.mark.parametrize(
    ("query", "code"),
    [({"cursor": "not-a-cursor"}, "invalid_cursor"), ({"since": "yesterday"}, "validation_error")],
)
def test_audit_list_errors_are_the_drf_views_envelopes(user, query, code):
    client = client_for(user)
    fast, drf = client.get(AUDITS, query), client.get(AUDITS, query, **DRF_PATH)

    assert_error(fast, 400, code)
    assert fast.json()["error"]["message"] == drf.json()["error"]["message"]
    assert fast.json()["error"]["details"] == drf.json()["error"]["details"]
    assert fast["Allow"] == drf["Allow"]
    assert fast["X-RateLimit-Remaining"] == str(int(drf["X-RateLimit-Remaining"]) + 1)


def test_member_sees_only_their_own_records_on_the_fast_path(tenant):
    owner = UserFactory(tenant=tenant, role="owner")
    member = UserFactory(tenant=tenant, role="member")
    audit_services.audit_custom_record(actor=owner, action="custom.owner.only")
    audit_services.audit_custom_record(actor=member, action="custom.member.own")

    actions = {row["action"] for row in client_for(member).get(AUDITS).json()["results"]}

    assert "custom.member.own" in actions and "custom.owner.only" not in actions


@pytest.mark.parametrize("path", [ME, AUDITS])
def test_missing_and_bad_tokens_get_the_drf_401(api, path):
    assert_error(api.get(path), 401, "not_authenticated")
    api.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")
    response = api.get(path)
    assert_error(response, 401, "token_not_valid")
    assert "WWW-Authenticate" in response


def test_other_accepts_and_methods_still_go_to_drf(user):
    client = client_for(user)
    assert client.get(ME, HTTP_ACCEPT="text/html").status_code == 406
    assert client.head(ME).status_code == 200
    assert client.options(ME).status_code == 200
    assert_error(client.delete(ME), 405, "method_not_allowed")


# --------------------------------------------------------------------------- rate limit


def test_the_fast_path_counts_each_request_once_and_refuses_over_the_limit(user, settings):
    settings.RATE_LIMIT_FREE = 3
    user.tenant.tier = Tenant.Tier.FREE
    user.tenant.save(update_fields=["tier"])
    client = client_for(user)

    remaining = [client.get(ME)["X-RateLimit-Remaining"] for _ in range(2)]
    remaining.append(client.get(ME, **DRF_PATH)["X-RateLimit-Remaining"])
    refused = client.get(ME)

    assert remaining == ["2", "1", "0"]
    assert_error(refused, 429, "rate_limited")
    assert refused["Retry-After"].isdigit() and refused["X-RateLimit-Remaining"] == "0"
    drf_refused = client.get(ME, **DRF_PATH)
    fast_error, drf_error = refused.json()["error"], drf_refused.json()["error"]
    assert (fast_error["code"], fast_error["details"]) == (drf_error["code"], drf_error["details"])
    # The message names the seconds left, which may tick between the two requests.
    assert re.sub(r"\d+", "N", fast_error["message"]) == re.sub(r"\d+", "N", drf_error["message"])
    assert (refused["Allow"], refused["Content-Type"]) == (drf_refused["Allow"], drf_refused["Content-Type"])


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_rate_limit_runs_in_the_event_loop(settings):
    settings.RATE_LIMIT_FREE = 2
    user = await database_sync_to_async(UserFactory)()
    token = await database_sync_to_async(token_for)(user)

    answers = [await asgi("GET", ME, token) for _ in range(3)]

    assert [status for status, _, _ in answers] == [200, 200, 429]
    assert [headers["x-ratelimit-remaining"] for _, headers, _ in answers] == ["1", "0", "0"]
    status, headers, body = answers[2]
    assert json.loads(body)["error"]["code"] == "rate_limited"
    assert json.loads(body)["error"]["request_id"] == headers["x-request-id"]
    assert int(headers["retry-after"]) >= 1
    assert headers["content-type"] == "application/json"


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_bodies_are_the_drf_paths(settings):
    user = await database_sync_to_async(UserFactory)(role="owner")
    await database_sync_to_async(audit_services.audit_custom_record)(actor=user, action="custom.asgi.one")
    token = await database_sync_to_async(token_for)(user)
    drf_accept = ((b"accept", b"application/json; q=1"),)

    for path in (ME, AUDITS):
        status, headers, body = await asgi("GET", path, token)
        drf_status, drf_headers, drf_body = await asgi("GET", path, token, headers=drf_accept)
        assert (status, body) == (drf_status, drf_body)
        assert headers["allow"] == drf_headers["allow"]
        assert headers["content-type"] == drf_headers["content-type"] == "application/json"


# ------------------------------------------------------------------------- caller cache


def test_a_cached_caller_costs_no_query(user, django_assert_num_queries):
    client = client_for(user)
    assert client.get(ME).status_code == 200

    with django_assert_num_queries(0):
        assert client.get(ME).status_code == 200


@pytest.mark.parametrize("change", ["user_inactive", "tenant_inactive"])
def test_a_change_saved_through_the_orm_is_refused_at_once(user, change):
    client = client_for(user)
    assert client.get(ME).status_code == 200
    if change == "user_inactive":
        user.is_active = False
        user.save(update_fields=["is_active"])
    else:
        user.tenant.is_active = False
        user.tenant.save(update_fields=["is_active"])

    assert_error(client.get(ME), 401, "authentication_failed")
    assert_error(client.get(AUDITS), 401, "authentication_failed")


@pytest.mark.parametrize("change", ["user_inactive", "tenant_inactive"])
def test_a_change_the_orm_did_not_see_is_refused_within_the_ttl(user, change, monkeypatch, settings):
    settings.AUTH_CALLER_CACHE_SECONDS = 2
    now = [1000.0]
    monkeypatch.setattr(callers, "clock", lambda: now[0])
    client = client_for(user)
    assert client.get(ME).status_code == 200
    # A bulk update (or another process, or SQL): no signal, so this process's cache keeps
    # the old row until its entry expires.
    if change == "user_inactive":
        User.objects.filter(pk=user.pk).update(is_active=False)
    else:
        Tenant.objects.filter(pk=user.tenant_id).update(is_active=False)

    now[0] += 1.9
    assert client.get(ME).status_code == 200  # within the bound
    now[0] += 0.2
    assert_error(client.get(ME), 401, "authentication_failed")  # past it


def test_a_deleted_user_is_refused_at_once(user):
    client = client_for(user)
    assert client.get(ME).status_code == 200
    user.delete()

    assert_error(client.get(ME), 401, "authentication_failed")


def test_the_cache_can_be_turned_off(user, settings, django_assert_num_queries):
    settings.AUTH_CALLER_CACHE_SECONDS = 0
    client = client_for(user)
    assert client.get(ME).status_code == 200

    with django_assert_num_queries(1):
        assert client.get(ME).status_code == 200


def test_each_request_gets_its_own_user_and_tenant_objects(user, settings):
    cache = CallerCache()
    settings.AUTH_CALLER_CACHE_SECONDS = 2
    loaded = User.objects.select_related("tenant").get(pk=user.pk)
    cache.put(loaded)

    first, second = cache.get(user.pk), cache.get(str(user.pk))
    first.display_name = "changed"
    first.tenant.name = "changed"

    assert first is not second and first.tenant is not second.tenant
    assert (second.display_name, second.tenant.name) == (user.display_name, user.tenant.name)
    assert second.tenant_id == user.tenant_id and not second._state.adding


def test_the_cache_is_bounded(user, settings):
    settings.AUTH_CALLER_CACHE_SECONDS = 2
    cache = CallerCache(max_entries=2)
    users = [user, UserFactory(), UserFactory()]
    for each in users:
        cache.put(User.objects.select_related("tenant").get(pk=each.pk))

    assert cache.get(users[0].pk) is None
    assert cache.get(users[1].pk) is not None and cache.get(users[2].pk) is not None


# ------------------------------------------------------------------------ idempotent replay


def test_a_replay_is_served_from_the_redis_copy_without_a_query(real_stack, user, django_assert_num_queries):
    client = client_for(user)
    headers = {"HTTP_IDEMPOTENCY_KEY": "fast-replay-1"}
    first = client.post("/api/v1/conversations/", {"title": "once"}, format="json", **headers)
    assert first.status_code == 201

    with django_assert_num_queries(0):
        replay = client.post("/api/v1/conversations/", {"title": "once"}, format="json", **headers)

    assert replay.status_code == 201 and replay.content == first.content
    assert replay["Idempotent-Replayed"] == "true"
    assert replay["Allow"] == first["Allow"]
    assert replay["X-RateLimit-Remaining"] == str(int(first["X-RateLimit-Remaining"]) - 1)
    assert Conversation.objects.filter(title="once").count() == 1
    drf = client.post("/api/v1/conversations/", {"title": "once"}, format="json", **headers, **DRF_PATH)
    assert drf.content == replay.content and drf["Allow"] == replay["Allow"]


def test_without_the_copy_a_replay_is_one_query_on_the_row(real_stack, user, django_assert_num_queries):
    client = client_for(user)
    headers = {"HTTP_IDEMPOTENCY_KEY": "fast-replay-row"}
    first = client.post("/api/v1/conversations/", {"title": "row"}, format="json", **headers)
    cache.delete_pattern("idempotency:*")  # the Redis copy is gone (evicted, flushed): the row answers

    with django_assert_num_queries(1):
        replay = client.post("/api/v1/conversations/", {"title": "row"}, format="json", **headers)

    assert (replay.status_code, replay.content) == (201, first.content)
    assert replay["Idempotent-Replayed"] == "true"
    assert Conversation.objects.filter(title="row").count() == 1


def test_a_replay_with_another_body_is_still_422_and_counted_once(user):
    client = client_for(user)
    headers = {"HTTP_IDEMPOTENCY_KEY": "fast-replay-2"}
    first = client.post("/api/v1/conversations/", {"title": "one"}, format="json", **headers)

    other = client.post("/api/v1/conversations/", {"title": "two"}, format="json", **headers)

    assert_error(other, 422, "idempotency_key_mismatch")
    assert other["X-RateLimit-Remaining"] == str(int(first["X-RateLimit-Remaining"]) - 1)
    assert Conversation.objects.filter(title="two").count() == 0


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_a_replay_is_the_stored_response():
    user = await database_sync_to_async(UserFactory)()
    token = await database_sync_to_async(token_for)(user)
    key = ((b"idempotency-key", b"asgi-replay"),)
    body = b'{"title": "asgi once"}'

    first = await asgi("POST", "/api/v1/conversations/", token, body=body, headers=key)
    replay = await asgi("POST", "/api/v1/conversations/", token, body=body, headers=key)

    assert (first[0], replay[0]) == (201, 201)
    assert replay[2] == first[2]
    assert replay[1]["idempotent-replayed"] == "true"
    assert replay[1]["allow"] == first[1]["allow"]
    count = await database_sync_to_async(Conversation.objects.filter(title="asgi once").count)()
    assert count == 1


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_a_replay_without_the_copy_reads_the_row(real_stack):
    user = await database_sync_to_async(UserFactory)()
    token = await database_sync_to_async(token_for)(user)
    key = ((b"idempotency-key", b"asgi-replay-row"),)
    body = b'{"title": "asgi row"}'
    first = await asgi("POST", "/api/v1/conversations/", token, body=body, headers=key)
    await database_sync_to_async(cache.delete_pattern)("idempotency:*")

    replay = await asgi("POST", "/api/v1/conversations/", token, body=body, headers=key)
    other = await asgi("POST", "/api/v1/conversations/", token, body=b'{"title": "other"}', headers=key)

    assert (replay[0], replay[2], replay[1]["idempotent-replayed"]) == (201, first[2], "true")
    assert other[0] == 422 and json.loads(other[2])["error"]["code"] == "idempotency_key_mismatch"


def test_only_views_whose_policies_the_fast_path_reproduces_are_wrapped():
    from asgiref.sync import iscoroutinefunction
    from django.urls import resolve

    assert iscoroutinefunction(resolve(ME).func)
    assert iscoroutinefunction(resolve(AUDITS).func)
    assert iscoroutinefunction(resolve("/api/v1/conversations/").func)  # replays of its create
    # The tenant's users: owners and admins only (IsTenantAdmin), which the fast path does
    # not evaluate: DRF's view as it was.
    assert not iscoroutinefunction(resolve("/api/v1/users/").func)
    assert resolve("/api/v1/users/").func.cls.__name__ == "UserViewSet"


# ------------------------------------------------------------------ SSE views' preamble

STREAM = "/api/v1/chat/stream"


@pytest.mark.django_db(transaction=True)
async def test_sse_streams_read_the_caller_cache_and_count_in_the_event_loop(settings, monkeypatch):
    """The SSE views' preamble (config/api/sse.py) is the fast path's: the caller from the
    cache (a change saved through the ORM refused at once, a bulk one within the bound),
    the rate limit counted once per stream, in the event loop, with its headers."""
    settings.RATE_LIMIT_FREE = 100
    settings.AUTH_CALLER_CACHE_SECONDS = 2
    now = [1000.0]
    monkeypatch.setattr(callers, "clock", lambda: now[0])
    user = await database_sync_to_async(UserFactory)()
    token = await database_sync_to_async(token_for)(user)
    body = json.dumps({"message": "hello"}).encode()

    status, headers, stream = await asgi("POST", STREAM, token, body=body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert b"event: message.created" in stream
    assert headers["x-ratelimit-remaining"] == "99"
    status, headers, _ = await asgi("POST", STREAM, token, body=body)
    assert (status, headers["x-ratelimit-remaining"]) == (200, "98")

    # A bulk update: no signal, so the cached row serves until its entry expires.
    await database_sync_to_async(User.objects.filter(pk=user.pk).update)(is_active=False)
    now[0] += 1.9
    assert (await asgi("POST", STREAM, token, body=body))[0] == 200
    now[0] += 0.2
    status, _, refused = await asgi("POST", STREAM, token, body=body)
    assert (status, json.loads(refused)["error"]["code"]) == (401, "not_authenticated")

    # Saved through the ORM: evicted, refused at once.
    other = await database_sync_to_async(UserFactory)()
    other_token = await database_sync_to_async(token_for)(other)
    assert (await asgi("POST", STREAM, other_token, body=body))[0] == 200
    other.tenant.is_active = False
    await database_sync_to_async(other.tenant.save)(update_fields=["is_active"])
    assert (await asgi("POST", STREAM, other_token, body=body))[0] == 401


@pytest.mark.django_db(transaction=True)
async def test_sse_streams_over_the_limit_get_the_429_envelope(settings):
    settings.RATE_LIMIT_FREE = 1
    user = await database_sync_to_async(UserFactory)()
    token = await database_sync_to_async(token_for)(user)
    body = json.dumps({"message": "hello"}).encode()

    assert (await asgi("POST", STREAM, token, body=body))[0] == 200
    status, headers, refused = await asgi("POST", STREAM, token, body=body)

    assert status == 429 and headers["content-type"] == "application/json"
    assert json.loads(refused)["error"]["code"] == "rate_limited"
    assert int(headers["retry-after"]) >= 1
    assert await database_sync_to_async(Conversation.objects.filter(owner=user).count)() == 1


DEAD_CACHE = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens: a stopped Redis
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
}


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_a_cache_outage_fails_open_in_the_event_loop(settings):
    user = await database_sync_to_async(UserFactory)()
    token = await database_sync_to_async(token_for)(user)
    settings.CACHES = DEAD_CACHE

    status, headers, body = await asgi("GET", ME, token)

    assert status == 200 and json.loads(body)["user"]["id"] == user.pk
    assert "x-ratelimit-limit" not in headers  # let through uncounted


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", [ME, STREAM])
async def test_under_asgi_a_cache_outage_refuses_when_fail_closed(settings, path):
    user = await database_sync_to_async(UserFactory)()
    token = await database_sync_to_async(token_for)(user)
    settings.CACHES = DEAD_CACHE
    settings.RATELIMIT_FAIL_OPEN = False
    body = json.dumps({"message": "hello"}).encode() if path == STREAM else b""

    status, headers, refused = await asgi("POST" if path == STREAM else "GET", path, token, body=body)

    assert status == 429 and headers["content-type"] == "application/json"
    assert json.loads(refused)["error"]["code"] == "rate_limited"
    assert await database_sync_to_async(Conversation.objects.filter(owner=user).count)() == 0
