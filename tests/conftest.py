import datetime as dt
import os

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.accounts.factories import TenantFactory, UserFactory
from tests.helpers import client_for
from tests.redis_isolation import use_test_redis

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Never the developer's REDIS_URL database: TEST_REDIS_URL, or the next database index
# (tests/redis_isolation.py). Before any test, so nothing connected to the other one yet.
TEST_REDIS_URL = use_test_redis(os.environ, settings)


def _real_stack_problem() -> str | None:
    """Why PostgreSQL + Redis are not what this run uses, or None when they are."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return "DATABASE_URL does not point at PostgreSQL"
    if not os.environ.get("REDIS_URL"):
        return "REDIS_URL is not set"
    import redis

    try:
        redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis at REDIS_URL does not answer: {exc}"
    return None


def pytest_sessionstart(session):
    # In CI the suite must run against PostgreSQL and Redis, and fail (not skip) without them.
    if IN_CI:
        problem = _real_stack_problem()
        if problem:
            pytest.exit(f"CI needs PostgreSQL and Redis: {problem}", returncode=3)


@pytest.fixture
def real_stack():
    """Tests that need PostgreSQL + Redis: skipped outside CI when absent, never in CI."""
    problem = _real_stack_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"real stack required in CI: {problem}")
        pytest.skip(f"needs PostgreSQL and Redis ({problem}); set DATABASE_URL and REDIS_URL")


@pytest.fixture(autouse=True)
def _isolated_cache_and_tasks(settings):
    """Each test starts with an empty cache (rate limits, idempotency) and runs Celery
    tasks in-process; the end-to-end tests start real workers of their own.

    On Redis the wipe is ``delete_pattern("*")``, which django-redis scopes to the cache's
    key prefix, in the test run's own database (TEST_REDIS_URL, see above)."""
    from config.celery import app

    clear_test_cache()
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = eager
    # Each async test runs on an event loop of its own, and a channels-redis layer belongs
    # to the loop that first received on it (its receive lock and count): a consumer still
    # receiving when its test's loop closed would make the next test's receive fail with
    # "bound to a different event loop". Production has one loop per process; tests get a
    # fresh layer each.
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    # Likewise the event loop's database pool (config/api/asyncdb.py): its connections
    # would outlive the test's loop and keep the test database busy at teardown.
    from config.api import asyncdb

    asyncdb.discard_all()


def clear_test_cache() -> None:
    from django.core.cache import cache

    from config.api.auth import validated_tokens
    from config.api.callers import callers

    callers.clear()  # the per-process caller cache (user + tenant rows)
    validated_tokens.clear()  # the fast paths' checked access tokens

    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("*")  # django-redis: only keys under the cache's KEY_PREFIX
    else:
        cache.clear()


@pytest.fixture
def frozen_clock():
    """Our clock frozen at the real "now" (so JWTs minted inside are valid); it moves only
    when the test ticks it. Rate-limit windows then never turn mid-test by chance. The
    connection pool and the Redis client keep their own clocks: freezing theirs makes every
    pooled checkout wait out its timeout."""
    from freezegun import freeze_time

    with freeze_time(dt.datetime.now(dt.UTC), ignore=["psycopg_pool", "psycopg", "redis"]) as frozen:
        yield frozen


@pytest.fixture
def tenant(db):
    return TenantFactory()


@pytest.fixture
def user(tenant):
    return UserFactory(tenant=tenant, role="owner")


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def auth_api(user):
    return client_for(user)


# The address and request id of the staff member's browser in admin tests.
ADMIN_IP = "10.2.0.1"
ADMIN_REQUEST_ID = "admin-req-1"


@pytest.fixture
def staff(db):
    """A superuser in the operators tenant (where createsuperuser puts staff)."""
    return UserFactory(
        email="ops@example.com", tenant=TenantFactory(slug="operators"), is_staff=True, is_superuser=True
    )


@pytest.fixture
def admin_client(staff):
    """The Django test client logged into the admin as ``staff``."""
    from django.test import Client

    client = Client(REMOTE_ADDR=ADMIN_IP, HTTP_X_REQUEST_ID=ADMIN_REQUEST_ID)
    client.force_login(staff)
    return client


@pytest.fixture
def real_broker(real_stack):
    """Celery publishes for real to the test run's Redis (its broker URL), not eagerly."""
    from config.celery import app

    saved = app.conf.task_always_eager
    app.conf.task_always_eager = False
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("default")
    yield app
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("default")
    app.conf.task_always_eager = saved
