"""Liveness, readiness and metrics endpoints (plain Django views: no auth, no DRF)."""

import asyncio
import contextlib
import time
import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .errors import DEPENDENCY_RETRY_AFTER_SECONDS, error_response


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_cache() -> None:
    key = f"health:{uuid.uuid4().hex}"
    cache.set(key, "1", timeout=5)
    if cache.get(key) != "1":
        raise RuntimeError("cache did not return the value it stored")
    cache.delete(key)


def check_broker() -> None:
    from config.celery import app

    if app.conf.task_always_eager:
        return  # Tasks run in-process: there is no broker to reach.
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def check_channel_layer() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")

    async def roundtrip():
        channel = await layer.new_channel()
        try:
            await layer.send(channel, {"type": "health.ping"})
            message = await layer.receive(channel)
            if message.get("type") != "health.ping":
                raise RuntimeError("channel layer returned another message")
        finally:
            if hasattr(layer, "_get_group_channel_name"):  # channels-redis' pub/sub layer
                await _release_pubsub_channel(layer, channel)

    async_to_sync(roundtrip)()


async def _release_pubsub_channel(layer, channel: str) -> None:
    """The pub/sub layer keeps a new channel subscribed (a Redis subscription and a queue)
    until a read of it is cancelled, its only way to let a channel go: every probe would
    leave one behind."""
    reading = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)  # the read starts waiting on the channel's queue
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reading


CHECKS = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
    "channel_layer": check_channel_layer,
}


def _system_of(check: str) -> str:
    """The outside system a check reaches, named as an operator knows it (``redis``,
    ``database``): several checks fail together when one Redis is down."""
    if check == "database":
        return "database"
    if check == "broker":
        from config.celery import app

        return str(app.conf.broker_url).split(":", 1)[0].replace("rediss", "redis")
    if check == "cache":
        return "redis" if "redis" in settings.CACHES["default"]["BACKEND"].lower() else "cache"
    return "redis" if "redis" in settings.CHANNEL_LAYERS["default"]["BACKEND"].lower() else "channel_layer"


async def health(request):
    """Liveness: the process answers. Touches no dependency; async, so no thread hop."""
    return JsonResponse({"status": "ok"})


def ready(request):
    """Readiness: every dependency answers; 503 naming the ones that do not."""
    results, failed = {}, {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
            results[name] = {"status": "error"}
        else:
            results[name] = {"status": "ok", "ms": round((time.perf_counter() - started) * 1000, 1)}
    if failed:
        unavailable = sorted({_system_of(name) for name in failed})
        return error_response(
            503,
            "dependency_unavailable",
            f"Unavailable: {', '.join(unavailable)}.",
            {"checks": results, "errors": failed, "unavailable": unavailable},
            headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)},
        )
    return JsonResponse({"status": "ok", "checks": results})


def metrics(request):
    token = settings.METRICS_TOKEN
    if token and request.headers.get("Authorization", "") != f"Bearer {token}":
        return error_response(401, "not_authenticated", "A valid metrics token is required.")
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
