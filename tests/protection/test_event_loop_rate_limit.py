"""The event-loop rate limit's one-command count (config/api/ratelimit.py, ``_aredis_count``
as a script): the counter expires with its window as the MULTI/EXEC's did, a server that
lost its scripts (restarted, SCRIPT FLUSH) is served on, and it shares the budget with the
DRF views' counting."""

import pytest
from channels.db import database_sync_to_async
from django.core.cache import cache
from django_ratelimit.core import EXPIRATION_FUDGE

from tests.accounts.factories import UserFactory
from tests.protection.test_fast_paths import asgi, token_for

pytestmark = pytest.mark.django_db(transaction=True)

ME = "/api/v1/auth/me"
DRF_ACCEPT = ((b"accept", b"application/json; q=1"),)


def counters() -> dict:
    client = cache.client.get_client(write=True)
    keys = [key for key in client.keys("*") if b"api:tenant" in key or b"rl:" in key]
    return {key: (int(client.get(key)), client.ttl(key)) for key in keys}


async def test_the_counter_expires_with_its_window_and_survives_a_script_flush(real_stack, settings):
    settings.RATE_LIMIT_FREE = 10
    user = await database_sync_to_async(UserFactory)()
    token = await database_sync_to_async(token_for)(user)

    first = await asgi("GET", ME, token)
    (count, ttl), *others = (await database_sync_to_async(counters)()).values()
    await database_sync_to_async(lambda: cache.client.get_client(write=True).script_flush())()
    second = await asgi("GET", ME, token)
    drf = await asgi("GET", ME, token, headers=DRF_ACCEPT)

    assert others == [] and count == 1
    assert 0 < ttl <= 60 + EXPIRATION_FUDGE
    assert [first[0], second[0], drf[0]] == [200, 200, 200]
    assert [a[1]["x-ratelimit-remaining"] for a in (first, second, drf)] == ["9", "8", "7"]


def evalsha_calls() -> int:
    stats = cache.client.get_client(write=True).info("commandstats")
    return stats.get("cmdstat_evalsha", {}).get("calls", 0) + stats.get("cmdstat_eval", {}).get("calls", 0)


async def test_concurrent_requests_of_a_tenant_share_a_count_and_each_gets_its_own(real_stack, settings):
    """Requests arriving together are counted in one command, with the counts one command
    each would give: distinct remaining values, and the limit refuses exactly the excess."""
    import asyncio

    settings.RATE_LIMIT_FREE = 12
    user = await database_sync_to_async(UserFactory)()
    token = await database_sync_to_async(token_for)(user)
    assert (await asgi("GET", ME, token))[0] == 200  # the caller cached, the script loaded
    calls = await database_sync_to_async(evalsha_calls)()

    answers = await asyncio.gather(*(asgi("GET", ME, token) for _ in range(15)))

    sent = await database_sync_to_async(evalsha_calls)() - calls
    statuses = sorted(status for status, _headers, *_ in answers)
    remaining = sorted(int(headers["x-ratelimit-remaining"]) for status, headers, *_ in answers if status == 200)
    assert statuses == [200] * 11 + [429] * 4  # 1 + 11 = the budget of 12; the 4 others refused
    assert remaining == list(range(0, 11))  # 11, 10, ... 1 left before each: no two alike
    assert 1 <= sent < 15  # shared commands, not one a request
    (count, _ttl), *others = (await database_sync_to_async(counters)()).values()
    assert others == [] and count == 16


async def test_a_shared_count_fails_open_or_closed_for_each_of_its_requests(real_stack, settings):
    """Requests arriving together on a stopped Redis: the shared count's error is each one's."""
    import asyncio

    from tests.protection.test_fast_paths import DEAD_CACHE

    user = await database_sync_to_async(UserFactory)()
    token = await database_sync_to_async(token_for)(user)
    settings.CACHES = DEAD_CACHE
    assert (await asgi("GET", ME, token))[0] == 200  # the caller cached: the others arrive together

    opened = await asyncio.gather(*(asgi("GET", ME, token) for _ in range(5)))
    settings.RATELIMIT_FAIL_OPEN = False
    closed = await asyncio.gather(*(asgi("GET", ME, token) for _ in range(5)))

    assert [status for status, *_ in opened] == [200] * 5
    assert all("x-ratelimit-remaining" not in headers for _status, headers, *_ in opened)  # uncounted
    assert [status for status, *_ in closed] == [429] * 5


async def test_the_event_loop_keeps_one_cache_object_until_the_caches_change(real_stack, settings):
    """Requests share the limiter's cache object (Django's caches are per request context
    under ASGI); a change of CACHES builds it again, and the counting follows the new
    configuration (its key prefix)."""
    from config.api import ratelimit

    user = await database_sync_to_async(UserFactory)()
    token = await database_sync_to_async(token_for)(user)
    assert (await asgi("GET", ME, token))[0] == 200
    held = ratelimit._loop_caches["default"]
    assert (await asgi("GET", ME, token))[0] == 200
    assert ratelimit._loop_caches["default"] is held

    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": "changed"}}
    client = cache.client.get_client(write=True)
    try:
        assert (await asgi("GET", ME, token))[0] == 200

        assert ratelimit._loop_caches["default"] is not held
        keys = await database_sync_to_async(client.keys)("changed:*")
        assert any(b":rl:" in key for key in keys), keys
    finally:  # outside the prefix the suite clears between tests
        for key in await database_sync_to_async(client.keys)("changed:*"):
            await database_sync_to_async(client.delete)(key)
