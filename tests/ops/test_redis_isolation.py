"""The test run keeps off the developer's Redis database (REDIS_URL): its cache, rate-limit
counters and channel groups live in the test run's own database, and the wipe before each
test deletes only there."""

import os

import pytest
import redis
from django.core.cache import cache

from tests.conftest import clear_test_cache
from tests.redis_isolation import APP_REDIS_URL, redis_db, redis_url_for_tests, with_redis_db

APP_KEY = "chat:1:developer-data"  # what the app's own cache (KEY_PREFIX "chat") stores


@pytest.fixture
def app_redis(real_stack):
    client = redis.Redis.from_url(APP_REDIS_URL, socket_connect_timeout=2)
    client.set(APP_KEY, "keep me", ex=60)
    yield client
    client.delete(APP_KEY)
    client.close()


def test_wipe_and_cache_writes_never_reach_the_developers_redis_database(app_redis):
    test_redis = redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=2)

    clear_test_cache()
    cache.set("written-by-a-test", "x", 60)

    assert app_redis.get(APP_KEY) == b"keep me"
    assert os.environ["REDIS_URL"] != APP_REDIS_URL
    assert not list(app_redis.scan_iter(match="*written-by-a-test"))
    assert list(test_redis.scan_iter(match="*written-by-a-test"))
    test_redis.close()


def test_test_redis_is_test_redis_url_or_the_next_database_of_redis_url():
    assert redis_url_for_tests({"TEST_REDIS_URL": "redis://h:1/3", "REDIS_URL": "redis://h:1/3"}) == "redis://h:1/3"
    assert redis_url_for_tests({"REDIS_URL": "redis://h:6379/0"}) == "redis://h:6379/1"
    assert redis_url_for_tests({"REDIS_URL": "redis://:pw@h:6379"}) == "redis://:pw@h:6379/1"
    with pytest.raises(RuntimeError, match="TEST_REDIS_URL"):  # never wraps around to /0
        redis_url_for_tests({"REDIS_URL": "redis://h:6379/15"})
    assert redis_url_for_tests({}) == ""
    assert redis_db(with_redis_db("redis://h/2?x=1", 9)) == 9


def test_the_test_channel_layer_keeps_the_hosts_connection_options(settings):
    """Only the address moves to the test database: the read timeout that keeps idle
    listeners alive (above channels-redis' 5 s blocking read) is what the tests exercise."""
    from tests.redis_isolation import use_test_redis

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://h:6379/0", "socket_timeout": 15}]},
        }
    }
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    environ = {"REDIS_URL": "redis://h:6379/0", "CELERY_BROKER_URL": "memory://"}

    use_test_redis(environ, settings)

    assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] == [
        {"address": "redis://h:6379/1", "socket_timeout": 15}
    ]


def test_the_test_pubsub_layer_moves_to_the_test_database_and_its_prefix(settings):
    """Pub/sub channels cross databases: the test run's layer is re-pointed and re-prefixed
    with the test database's index, as the processes the end-to-end tests start are."""
    from tests.redis_isolation import use_test_redis

    settings.CHANNEL_LAYER_PREFIX = "asgi"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": "redis://h:6379/0", "socket_timeout": 15}], "prefix": "asgi.db0."},
        }
    }
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    environ = {"REDIS_URL": "redis://h:6379/0", "CELERY_BROKER_URL": "memory://"}

    use_test_redis(environ, settings)

    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    assert config["hosts"] == [{"address": "redis://h:6379/1", "socket_timeout": 15}]
    assert config["prefix"] == "asgi.db1."
