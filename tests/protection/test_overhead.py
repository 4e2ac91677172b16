"""What every request costs before the view does its work: one query for the caller (user
and tenant), one Redis round trip for the rate limit, and a middleware chain that runs
natively under ASGI (no sync/async hop between middleware). See docs/overhead.md."""

import asyncio
import logging

import asgiref.sync
import pytest
import redis.connection
from channels.db import database_sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings

from config.api import asyncdb
from config.api.ratelimit import tenant_usage
from tests.accounts.factories import UserFactory
from tests.helpers import asgi_scope, assert_error, client_for

pytestmark = pytest.mark.django_db

ME = "/api/v1/auth/me"


@pytest.fixture
def redis_round_trips(monkeypatch):
    """How many times redis-py sends to the server (a pipeline sends once)."""
    sent = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


def test_an_authenticated_request_loads_user_and_tenant_in_one_query(user, django_assert_num_queries):
    client = client_for(user)

    with django_assert_num_queries(1) as captured:
        response = client.get(ME)

    assert response.status_code == 200
    assert (response.json()["user"]["email"], response.json()["tenant"]["id"]) == (user.email, user.tenant_id)
    sql = captured.captured_queries[0]["sql"]
    assert '"accounts_user"' in sql and '"accounts_tenant"' in sql


def test_a_deactivated_user_is_refused_at_the_next_request(user):
    client = client_for(user)
    assert client.get(ME).status_code == 200
    user.is_active = False
    user.save(update_fields=["is_active"])

    assert_error(client.get(ME), 401, "authentication_failed")


def test_a_deleted_user_is_refused(user):
    client = client_for(user)
    user.delete()

    assert_error(client.get(ME), 401, "authentication_failed")


def test_the_rate_limit_costs_one_redis_round_trip(real_stack, redis_round_trips, settings):
    settings.RATE_LIMIT_FREE = 2
    user = UserFactory()
    user.tenant.tier  # noqa: B018 - loaded, as authentication leaves it
    counts = []
    for _ in range(3):
        redis_round_trips.clear()
        usage = tenant_usage(user=user)
        counts.append(len(redis_round_trips))

    assert counts == [1, 1, 1]
    assert (usage.limited, usage.remaining, usage.limit) == (True, 0, 2)
    assert usage.retry_after >= 1


def test_a_request_over_the_limit_costs_one_round_trip_and_no_query(
    real_stack, redis_round_trips, settings, django_assert_num_queries
):
    # No query: the caller comes from the caller cache (config/api/callers.py), filled by
    # the first request (one query then, pinned above).
    settings.RATE_LIMIT_FREE = 1
    client = client_for(UserFactory())
    assert client.get(ME).status_code == 200
    redis_round_trips.clear()

    with django_assert_num_queries(0):
        response = client.get(ME)

    assert_error(response, 429, "rate_limited")
    assert response["Retry-After"].isdigit() and response["X-RateLimit-Remaining"] == "0"
    assert len(redis_round_trips) == 1


def test_looking_at_a_budget_counts_nothing(settings):
    user = UserFactory()
    tenant_usage(user=user)

    looked = tenant_usage(user=user, increment=False)
    again = tenant_usage(user=user, increment=False)

    assert looked.remaining == again.remaining == settings.RATE_LIMIT_FREE - 1


class SyncOnlyMiddleware:
    sync_capable, async_capable = True, False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)


def asgi_adaptations(caplog, middleware) -> list[str]:
    """The sync/async adaptations Django makes building the ASGI chain of ``middleware``
    (it logs each one when DEBUG is on); each costs a thread hop on every request."""
    caplog.clear()
    with (
        override_settings(DEBUG=True, MIDDLEWARE=middleware),
        caplog.at_level(logging.DEBUG, logger="django.request"),
    ):
        ASGIHandler()
    return [r.getMessage() for r in caplog.records if "adapted" in r.getMessage()]


def test_the_middleware_chain_runs_natively_under_asgi(caplog, settings):
    """Under ASGI (how the app is served) no hop happens between middleware: every
    middleware in MIDDLEWARE is async-capable. The only hop left is into a sync view."""
    assert asgi_adaptations(caplog, settings.MIDDLEWARE) == []
    # The check sees a sync-only middleware (WhiteNoise was one).
    sync_only = f"{__name__}.SyncOnlyMiddleware"
    assert asgi_adaptations(caplog, [*settings.MIDDLEWARE[:4], sync_only, *settings.MIDDLEWARE[4:]]) != []


async def serve(path: str, token: str | None = None) -> int:
    """One HTTP request through the ASGI application as daphne serves it; its status."""
    from config.asgi import application

    scope = asgi_scope(path, token)
    status, received, done = [], [], asyncio.Event()

    async def receive():
        if not received:
            received.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await application(scope, receive, send)
    return status[0]


@pytest.fixture
def thread_hops(monkeypatch):
    """What each sync_to_async call of a request runs (a thread hop each)."""
    hops = []
    original = asgiref.sync.SyncToAsync.__call__

    async def counting(self, *args, **kwargs):
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(asgiref.sync.SyncToAsync, "__call__", counting)
    return hops


# Every middleware runs in the event loop (config/api/native.py; Django's deploy checks kept
# by config/api/checks.py), and the handler hops to the request's thread at the end only
# when the request did sync work there (config/api/asgi_handler.py): then the response's
# close() runs in that thread, which closes the connections it opened.
CLOSE_IN_THE_REQUEST_THREAD = "HttpResponseBase.close"


@pytest.mark.django_db(transaction=True)
async def test_a_request_under_asgi_hops_to_a_thread_only_for_sync_work(real_stack, thread_hops):
    """Under ASGI a thread only for sync work: /health (an async view) hops to none (16
    before the Inline* middleware, 2 with Django's handler); /api/v1/auth/me is served async
    (config/api/fast.py): one hop to load the caller on a cache miss, and the close in that
    thread (2), none once cached (0; was 2 with Django's handler, 4 with the DRF view and its
    rendering, 17 before the Inline* middleware)."""
    user = await database_sync_to_async(UserFactory)()
    token = await database_sync_to_async(lambda: client_for(user)._credentials["HTTP_AUTHORIZATION"][7:])()
    await serve("/health")  # warm: first-request work

    thread_hops.clear()
    assert await serve("/health") == 200
    assert thread_hops == []

    thread_hops.clear()
    assert await serve(ME, token) == 200
    assert sorted(thread_hops) == sorted([CLOSE_IN_THE_REQUEST_THREAD, "JWTAuthentication.load_user"])

    thread_hops.clear()
    assert await serve(ME, token) == 200
    assert thread_hops == []

    # The audit page's query runs in the event loop (config/api/asyncdb.py): no hop of
    # its own either (was one, for list_body), and the app's handler none. Its pool is
    # closed in this test's loop.
    thread_hops.clear()
    assert await serve("/api/v1/audits/", token) == 200
    assert thread_hops == []
    await asyncdb.aclose_all()
