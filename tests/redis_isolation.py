"""The test run's own Redis database, so tests never touch the data of the app a developer
runs on ``REDIS_URL`` (its cache, rate-limit counters, channel groups, Celery queues).

- ``TEST_REDIS_URL`` when set: the test run uses exactly that.
- Otherwise, when ``REDIS_URL`` is set: the same server, the next database index
  (``redis://host:6379/0`` -> ``/1``). The derived indexes (this one, and the end-to-end
  broker's, 7 above it) never wrap around to a low index an app may use: with ``REDIS_URL``
  at ``/8`` or above, set ``TEST_REDIS_URL`` (and ``E2E_BROKER_URL``) explicitly.

``tests/conftest.py`` points the settings at it before any test runs (the settings are
already loaded by then, but the cache, the channel layer and Celery connect lazily) and
puts it in ``os.environ["REDIS_URL"]``, so the processes the end-to-end tests start use it
too. The end-to-end tests' Celery broker is a second database derived from it
(``tests/e2e/conftest.py``). The wipe before each test (``cache.delete_pattern("*")``)
only deletes keys under the cache's own prefix, in this database.
"""

import os
import re
from urllib.parse import urlsplit, urlunsplit

REDIS_DATABASES = 16  # Redis' default `databases`
# The app's Redis as the environment (or .env, read by the settings) named it, before the
# test run switched REDIS_URL to its own database.
APP_REDIS_URL = os.environ.get("REDIS_URL", "")


def redis_db(url: str) -> int:
    match = re.fullmatch(r"/?(\d*)", urlsplit(url).path)
    return int(match.group(1)) if match and match.group(1) else 0


def with_redis_db(url: str, db: int) -> str:
    if not 0 <= db < REDIS_DATABASES:
        raise RuntimeError(
            f"the tests would use Redis database {db}, past the last one ({REDIS_DATABASES - 1}); "
            "set TEST_REDIS_URL and E2E_BROKER_URL to databases of their own"
        )
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def redis_url_for_tests(environ) -> str:
    """The Redis URL the test run uses, or "" when neither variable is set (local memory)."""
    if environ.get("TEST_REDIS_URL"):
        return environ["TEST_REDIS_URL"]
    if environ.get("REDIS_URL"):
        return with_redis_db(environ["REDIS_URL"], redis_db(environ["REDIS_URL"]) + 1)
    return ""


def use_test_redis(environ, settings) -> str:
    """Points this process (and the processes it starts) at the test run's Redis."""
    url = redis_url_for_tests(environ)
    if not url:
        return ""
    environ["REDIS_URL"] = url
    if settings.CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache":
        settings.CACHES["default"]["LOCATION"] = url
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if backend in ("channels_redis.core.RedisChannelLayer", "channels_redis.pubsub.RedisPubSubChannelLayer"):
        # Only the address changes: the host's connection options (the read timeout above
        # channels-redis' blocking read, keepalives) are what the tests must exercise.
        config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
        config["hosts"] = [{**host, "address": url} if isinstance(host, dict) else url for host in config["hosts"]]
        if backend.endswith("RedisPubSubChannelLayer"):
            # Pub/sub channels cross databases: the prefix names the test run's database, as
            # the settings do for the processes the end-to-end tests start on this URL.
            from config.settings.channels import pubsub_prefix

            config["prefix"] = pubsub_prefix(getattr(settings, "CHANNEL_LAYER_PREFIX", "asgi"), url)
    if not environ.get("CELERY_BROKER_URL"):
        from config.celery import app

        settings.CELERY_BROKER_URL = url
        app.conf.broker_url = url
    return url
