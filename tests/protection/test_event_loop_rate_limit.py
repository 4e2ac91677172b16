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
