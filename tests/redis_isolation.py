"""The test run's own Redis database, so tests never touch the data of the app a developer
runs on ``REDIS_URL`` (its cache, rate-limit counters, channel groups, Celery queues).

- ``TEST_REDIS_URL`` when set: the test run uses exactly that.
- Otherwise, when ``REDIS_URL`` is set: the same server, the next database index
  (``redis://host:6379/0`` -> ``/1``; ``/15`` wraps to ``/0``).

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
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db % REDIS_DATABASES}", parts.query, parts.fragment))


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
    if settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer":
        # Only the address changes: the host's socket options (the read timeout that must
        # outlast the layer's blocking read, keepalive) stay as the settings made them.
        config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
        config["hosts"] = [{**host, "address": url} if isinstance(host, dict) else url for host in config["hosts"]]
    if not environ.get("CELERY_BROKER_URL"):
        from config.celery import app

        settings.CELERY_BROKER_URL = url
        app.conf.broker_url = url
    return url
