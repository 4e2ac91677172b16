"""Rate limits: per tenant by tier for authenticated API calls, per client IP for anonymous ones.

The counting follows django-ratelimit's core (``get_usage``): an atomic counter on the
shared cache (Redis on the real stack, so every web process draws on one budget) in fixed
windows of one minute, under the library's own key and window. The library offsets each
key's window by a stable jitter (``crc32(key) % period``), so windows of different tenants
do not all reset at once; ``Usage.retry_after`` is the time to the end of this key's window.

On Redis (django-redis) a request costs one round trip: ``SET key 0 EX ttl NX`` and
``INCRBY key 1`` pipelined in one MULTI/EXEC (``_redis_count``); the library's own
``add`` then ``incr`` is two. Any other cache (LocMem in the embedded mode) goes through
``get_usage`` unchanged.

Entry points:

- DRF views: ``TenantRateThrottle`` is in ``DEFAULT_THROTTLE_CLASSES``. It runs after DRF
  authentication (plain middleware would only see ``AnonymousUser`` with JWT); over the
  limit, DRF raises ``Throttled`` and the error envelope answers 429 ``rate_limited`` with
  ``Retry-After``. Views that are anonymous by design and must not share the per-IP auth
  budget (the schema, signed webhooks) set ``throttle_classes = []`` or their own.
- Anything else (async SSE views, the WebSocket consumer): ``tenant_usage(user=...)`` (sync,
  touches the database for the tenant's tier) or ``await atenant_usage(user=...)``.
- ``config.api.middleware.ApiMiddleware`` writes ``X-RateLimit-Limit``/``X-RateLimit-Remaining``
  on every response whose request carries a ``rate_limit_usage`` (set by the throttle, or by a
  plain view: ``request.rate_limit_usage = usage``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_ratelimit import ALL
from django_ratelimit.core import (
    _SIMPLE_KEYS,
    EXPIRATION_FUDGE,
    _get_window,
    _make_cache_key,
    _split_rate,
    get_usage,
)
from rest_framework import exceptions as drf_exceptions
from rest_framework.throttling import BaseThrottle

from config.core import metrics

from . import errors
from .errors import error_response

logger = logging.getLogger(__name__)

TENANT_GROUP = "api:tenant"
CLIENT_IP_GROUP = "api:client-ip"


@dataclass(frozen=True)
class Usage:
    """One look at a budget. ``retry_after`` is whole seconds (at least 1) until the window
    resets; ``counted`` is False when nothing was counted (limits disabled, or the cache
    failed and ``RATELIMIT_FAIL_OPEN`` let the request through)."""

    limit: int
    remaining: int
    retry_after: int
    limited: bool
    scope: str
    counted: bool = True

    def headers(self) -> dict[str, str]:
        if not self.counted:
            return {}
        headers = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining)}
        if self.limited:
            headers["Retry-After"] = str(self.retry_after)
        return headers

    def apply(self, response):
        """Sets the rate-limit headers on ``response`` (any Django/DRF response) and returns it."""
        for name, value in self.headers().items():
            if name not in response:
                response[name] = value
        return response

    def error_response(self):
        """The 429 envelope for a plain (non-DRF) view, headers included."""
        return error_response(
            429,
            "rate_limited",
            f"Rate limit exceeded. Try again in {self.retry_after} seconds.",
            {"limit": self.limit, "scope": self.scope},
            headers=self.headers(),
        )


def tier_limit(tier: str) -> int:
    """Requests a minute that a tenant of ``tier`` may make (settings ``RATE_LIMIT_<TIER>``)."""
    limits = {
        "free": settings.RATE_LIMIT_FREE,
        "standard": settings.RATE_LIMIT_STANDARD,
        "enterprise": settings.RATE_LIMIT_ENTERPRISE,
    }
    return limits.get(tier, settings.RATE_LIMIT_FREE)


def _redis_count(cache, *, group: str, value: str, rate: str, increment: bool) -> dict:
    """``get_usage``'s answer for one key on django-redis, in one round trip: the same key
    and window as the library, the counter created with its expiry if missing (``SET NX
    EX``) and bumped (``INCRBY``, 0 to only look) in one MULTI/EXEC."""
    limit, period = _split_rate(rate)
    window = _get_window(value, period)
    key = cache.make_key(_make_cache_key(group, window, rate, value, ALL))
    pipe = cache.client.get_client(write=True).pipeline(transaction=True)
    pipe.set(key, 0, ex=period + EXPIRATION_FUDGE, nx=True)
    pipe.incrby(key, 1 if increment else 0)
    count = int(pipe.execute()[1])
    return {"count": count, "limit": limit, "should_limit": count > limit, "time_left": window - int(time.time())}


def _count(request, *, group: str, key, rate: str, increment: bool) -> dict | None:
    """django-ratelimit's ``get_usage`` for our two kinds of key, one Redis round trip."""
    if not getattr(settings, "RATELIMIT_ENABLE", True):
        return None
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    if not hasattr(getattr(cache, "client", None), "get_client"):  # not django-redis
        return get_usage(request, group=group, key=key, rate=rate, increment=increment)
    value = key(group, request) if callable(key) else _client_ip(request)  # our keys: a callable or "ip"
    return _redis_count(cache, group=group, value=value, rate=rate, increment=increment)


def _client_ip(request) -> str:
    """django-ratelimit's ``ip`` key (``REMOTE_ADDR``, or ``RATELIMIT_IP_META_KEY``)."""
    return _SIMPLE_KEYS["ip"](request)


def _usage(*, request, group: str, key, rate: str, scope: str, increment: bool) -> Usage:
    try:
        raw = _count(request, group=group, key=key, rate=rate, increment=increment)
    except Exception:  # noqa: BLE001 - a cache outage must not turn into a 500
        raw = _cache_failed()
    return _interpret(raw, rate=rate, scope=scope, increment=increment)


def _cache_failed() -> dict | None:
    """What a cache outage means: fail-closed refuses, fail-open lets through uncounted."""
    if not settings.RATELIMIT_FAIL_OPEN:
        return {"count": 0, "limit": 0, "should_limit": True, "time_left": -1}
    logger.warning("rate limit cache unavailable; request let through", exc_info=True)
    return None


def _interpret(raw: dict | None, *, rate: str, scope: str, increment: bool) -> Usage:
    limit = int(rate.split("/", 1)[0])
    if raw is None:  # disabled, or fail-open after a cache error
        return Usage(limit=limit, remaining=limit, retry_after=0, limited=False, scope=scope, counted=False)
    limited = bool(raw["should_limit"])
    usage = Usage(
        limit=raw["limit"],
        remaining=max(0, raw["limit"] - raw["count"]),
        # django-ratelimit's window still includes its last second ``time_left`` (a request at
        # exactly that second counts against this window), so it resets one second later.
        retry_after=max(1, int(raw["time_left"]) + 1),
        limited=limited,
        scope=scope,
    )
    if limited and increment:
        metrics.RATE_LIMIT_REJECTIONS.labels(scope).inc()
    return usage


def tenant_usage(*, user, increment: bool = True) -> Usage:
    """Counts one request (``increment=True``) against the budget of ``user``'s tenant and
    returns where the budget stands; ``increment=False`` only looks.

    Sync: it reads ``user.tenant`` (one query unless already loaded), so call it from async
    code through ``database_sync_to_async`` (or ``await atenant_usage(...)``). The same
    budget serves REST, SSE and WebSocket messages. When ``usage.limited`` the caller
    refuses: a plain view returns ``usage.error_response()`` (429 envelope with
    ``Retry-After``), the WebSocket consumer closes with 4429 or sends an error event.
    Rejections are counted in ``rate_limit_rejections_total{scope="tenant"}``.
    """
    limit = tier_limit(user.tenant.tier)
    tenant_key = str(user.tenant_id)
    return _usage(
        request=None,
        group=TENANT_GROUP,
        key=lambda _group, _request: tenant_key,
        rate=f"{limit}/m",
        scope="tenant",
        increment=increment,
    )


async def atenant_usage(*, user, increment: bool = True) -> Usage:
    """``tenant_usage`` for async callers (SSE views, consumers): ``user.tenant`` is read
    in a thread (it may need a query)."""
    return await database_sync_to_async(tenant_usage)(user=user, increment=increment)


async def atenant_usage_loaded(*, user, increment: bool = True) -> Usage:
    """``tenant_usage`` in the event loop, for a ``user`` whose tenant is loaded (as
    authentication leaves it): on django-redis the same ``SET NX EX`` + ``INCRBY`` in one
    MULTI/EXEC through redis.asyncio (one round trip, no thread hop), same key, window,
    headers and fail-open/closed; any other cache through ``tenant_usage`` in a thread."""
    cache = _loop_cache(getattr(settings, "RATELIMIT_USE_CACHE", "default"))
    if not getattr(settings, "RATELIMIT_ENABLE", True) or not hasattr(getattr(cache, "client", None), "get_client"):
        return await sync_to_async(tenant_usage)(user=user, increment=increment)
    rate = f"{tier_limit(user.tenant.tier)}/m"
    try:
        raw = await _aredis_count(cache, group=TENANT_GROUP, value=str(user.tenant_id), rate=rate, increment=increment)
    except Exception:  # noqa: BLE001 - a cache outage must not turn into a 500
        raw = _cache_failed()
    return _interpret(raw, rate=rate, scope="tenant", increment=increment)


# alias -> the cache object the event loop's requests share (``_loop_cache``).
_loop_caches: dict[str, object] = {}


def _loop_cache(alias: str):
    """``caches[alias]`` for code in the event loop, built once per process. Django keeps
    its cache objects per context, and under ASGI every request is a context of its own:
    ``caches[alias]`` built a new django-redis cache (and its client object) for each
    request, ~2% of a page's CPU. Only its key function and its kind are used here
    (``make_key``, ``client``); a change of ``CACHES`` or ``RATELIMIT_USE_CACHE`` (tests)
    builds it again."""
    cache = _loop_caches.get(alias)
    if cache is None:
        cache = _loop_caches[alias] = caches[alias]
    return cache


@receiver(setting_changed)
def _forget_loop_caches(*, setting, **kwargs) -> None:
    if setting in ("CACHES", "RATELIMIT_USE_CACHE"):
        _loop_caches.clear()


# ``_redis_count``'s SET NX EX + INCRBY as one script: atomic as the MULTI/EXEC, one command
# and one reply for redis-py to build and parse instead of four (~50 us of CPU a request on
# the event loop). Sent as EVALSHA; redis-py loads it again after a NOSCRIPT (a restarted
# or flushed server).
_COUNT_SCRIPT = "redis.call('SET', KEYS[1], 0, 'EX', ARGV[2], 'NX') return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def _aredis_count(cache, *, group: str, value: str, rate: str, increment: bool) -> dict:
    """``_redis_count`` on redis.asyncio: the same key, expiry and count, in one EVALSHA,
    shared by the requests of one tenant that reach it in the same turn of the event loop
    (``_batched_count``)."""
    limit, period = _split_rate(rate)
    window = _get_window(value, period)
    key = cache.make_key(_make_cache_key(group, window, rate, value, ALL))
    expiry = period + EXPIRATION_FUDGE
    if increment:
        count = await _batched_count(key, expiry)
    else:
        count = await _script_count(key, 0, expiry)
    return {"count": count, "limit": limit, "should_limit": count > limit, "time_left": window - int(time.time())}


async def _script_count(key: str, increment: int, expiry: int) -> int:
    client = async_redis()
    script = getattr(client, "_rate_limit_count", None)
    if script is None:
        script = client._rate_limit_count = client.register_script(_COUNT_SCRIPT)
    return int(await script(keys=[key], args=[increment, expiry]))


class _CountBatch:
    """The requests counting against one key in one turn of the event loop."""

    __slots__ = ("future", "size")

    def __init__(self, future: asyncio.Future):
        self.future = future
        self.size = 0


# (loop, key) -> the batch still taking requests on that loop.
_open_batches: dict[tuple, _CountBatch] = {}


async def _batched_count(key: str, expiry: int) -> int:
    """Counts one request against ``key`` and returns its count, as ``INCRBY key 1`` would.
    The requests that reach this in the same turn of the event loop share one ``INCRBY n``
    (sent on the loop's next turn) and each takes its own place in the ``n``: the counts
    are the same distinct values one command each would give (so the limit refuses exactly
    the same requests), and a busy tenant costs a round trip a batch, not a request
    (py-spy on the served 202 path under 50 connections: 7-12% of the web process's GIL
    time was redis-py sending this script; docs/benchmarks.md, "Fifth round"). A Redis
    error is every request's of the batch."""
    loop = asyncio.get_running_loop()
    batch = _open_batches.get((loop, key))
    if batch is None:
        batch = _open_batches[(loop, key)] = _CountBatch(loop.create_future())
        loop.create_task(_send_batch(loop, key, batch, expiry))
    batch.size += 1
    place = batch.size
    # Shielded: a request cancelled while waiting leaves the others' count alone.
    total = await asyncio.shield(batch.future)
    return total - batch.size + place


async def _send_batch(loop, key: str, batch: _CountBatch, expiry: int) -> None:
    _open_batches.pop((loop, key), None)  # closed: a later request starts the next batch
    try:
        total = await _script_count(key, batch.size, expiry)
    except asyncio.CancelledError:  # the loop is closing
        batch.future.cancel()
        raise
    except Exception as exc:  # noqa: BLE001 - the waiters' error: each fails open or closed
        batch.future.set_exception(exc)
    else:
        batch.future.set_result(total)


# One redis.asyncio client (and its connection pool) per event loop: a pool's connections
# belong to the loop that opened them. A web process has one loop; tests start many, and a
# closed loop's client is dropped the next time a client is asked for.
_async_clients: dict = {}


def async_redis(alias: str | None = None):
    """The redis.asyncio client of cache ``alias``'s server (the rate-limit cache by
    default) for the running event loop."""
    import redis.asyncio

    alias = alias or getattr(settings, "RATELIMIT_USE_CACHE", "default")
    loop = asyncio.get_running_loop()
    client = _async_clients.get((loop, alias))
    if client is None:
        for other in [other for other in _async_clients if other[0].is_closed()]:
            del _async_clients[other]
        # The cache's own server (LOCATION, the first one if several) and socket timeouts.
        location = settings.CACHES[alias]["LOCATION"]
        options = settings.CACHES[alias].get("OPTIONS", {})
        client = redis.asyncio.Redis.from_url(
            location if isinstance(location, str) else location[0],
            socket_timeout=options.get("SOCKET_TIMEOUT"),
            socket_connect_timeout=options.get("SOCKET_CONNECT_TIMEOUT"),
        )
        _async_clients[(loop, alias)] = client
    return client


async def alimit_request(request, *, user):
    """For plain async views (SSE): counts the request against ``user``'s tenant, keeps the
    usage on ``request`` for the headers middleware, and returns the 429 envelope response
    when over the limit (the view returns it), else None."""
    usage = await atenant_usage(user=user)
    request.rate_limit_usage = usage
    return usage.error_response() if usage.limited else None


async def alimit_request_loaded(request, *, user):
    """``alimit_request`` for a ``user`` whose tenant is loaded (as authentication leaves
    it): under ASGI the count is made in the event loop (``atenant_usage_loaded``, no
    thread hop); the WSGI test client runs async views in a loop of their own per request,
    where redis.asyncio's per-loop client does not belong, so the thread path is kept."""
    if not isinstance(request, ASGIRequest):
        return await alimit_request(request, user=user)
    usage = await atenant_usage_loaded(user=user)
    request.rate_limit_usage = usage
    return usage.error_response() if usage.limited else None


def client_ip_usage(request, *, increment: bool = True) -> Usage:
    """Counts one anonymous request against its client IP's budget (``RATE_LIMIT_AUTH_PER_IP``).
    The IP is django-ratelimit's: ``REMOTE_ADDR``, or ``RATELIMIT_IP_META_KEY`` behind a proxy."""
    return _usage(
        request=getattr(request, "_request", request),
        group=CLIENT_IP_GROUP,
        key="ip",
        rate=_per_minute_or_given(settings.RATE_LIMIT_AUTH_PER_IP),
        scope="ip",
        increment=increment,
    )


def _per_minute_or_given(rate: str) -> str:
    return rate if "/" in rate else f"{int(rate)}/m"


class TenantRateThrottle(BaseThrottle):
    """DRF throttle: the tenant's budget for authenticated callers, the client IP's budget
    for anonymous ones (only ``AllowAny`` views get this far without a user)."""

    def allow_request(self, request, view) -> bool:
        counted = getattr(request._request, "rate_limit_usage", None)
        if counted is not None:
            # An async fast path (config.api.fast) counted this request already and then
            # handed it to the DRF view: one request, one count.
            self.usage = counted
            return not counted.limited
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and getattr(user, "tenant_id", None):
            usage = tenant_usage(user=user)
        else:
            usage = client_ip_usage(request)
        request._request.rate_limit_usage = usage
        self.usage = usage
        return not usage.limited

    def wait(self) -> float | None:
        return self.usage.retry_after


def count_request(request) -> None:
    """Counts a DRF request that was refused before the throttles ran (permission checks
    come first in DRF), so every authenticated response carries the headers and every
    request draws on the budget. Never refuses: the response is already decided."""
    if request is None or hasattr(request._request, "rate_limit_usage"):
        return
    user = getattr(request, "_user", None)  # never authenticate here: only what DRF already did
    if user is not None and user.is_authenticated and getattr(user, "tenant_id", None):
        request._request.rate_limit_usage = tenant_usage(user=user)


def exception_handler(exc, context):
    """DRF's ``EXCEPTION_HANDLER``: counts a request that permissions refused (401/403,
    raised before DRF's throttles run) against the caller's budget, then answers with the
    error envelope (``errors.exception_handler``). The counting lives here so that the
    envelope knows nothing of rate limits."""
    if isinstance(exc, (drf_exceptions.PermissionDenied, drf_exceptions.NotAuthenticated, DjangoPermissionDenied)):
        count_request(context.get("request"))
    return errors.exception_handler(exc, context)
