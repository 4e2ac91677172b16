"""Live connections: the channel layer that fans events out to WebSocket and SSE
listeners, and the timings of those connections."""

import re
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from .env import REDIS_URL, env


def pubsub_prefix(name: str, redis_url: str) -> str:
    """The pub/sub layer's channel prefix of a deployment: ``<name>.db<index>.`` (only the
    characters channel names allow: letters, digits, ``-``, ``_`` and ``.``)."""
    if not re.fullmatch(r"[A-Za-z0-9_\-.]{1,40}", name):
        raise ImproperlyConfigured(f"CHANNEL_LAYER_PREFIX must be 1-40 of A-Z a-z 0-9 _ - ., not {name!r}")
    match = re.fullmatch(r"/?(\d*)", urlsplit(redis_url).path)
    index = int(match.group(1)) if match and match.group(1) else 0
    return f"{name}.db{index}."


# A group member not renewed for this long is dropped by the channel layer at the next send
# to the group: a socket that died without leaving stops costing sends after it. Live
# listeners renew every third of it.
REALTIME_GROUP_EXPIRY_SECONDS = env.int("REALTIME_GROUP_EXPIRY_SECONDS", default=300)
# Concurrent group joins/leaves per event loop; below CHANNEL_LAYER_MAX_CONNECTIONS.
REALTIME_GROUP_OP_CONCURRENCY = env.int("REALTIME_GROUP_OP_CONCURRENCY", default=50)

# Channel layer for WebSocket/SSE fan-out: Redis across processes, in-memory in one process.
if REDIS_URL:
    # An idle listener waits in channels-redis' blocking read (BZPOPMIN, 5 s) in a loop.
    # redis-py >= 8 gives every socket a 5 s read timeout by default, so that read timed out
    # and killed every idle WebSocket (1011) and SSE stream (channels_redis issue 422). The
    # read timeout must stay above the blocking read; TCP keepalive and a health check
    # notice a dead Redis on idle connections instead.
    CHANNEL_REDIS_HOST = {
        "address": REDIS_URL,
        # Redis connections per event loop (redis-py's asyncio pool refuses past it with
        # "Too many connections"); group joins and leaves are held below it
        # (REALTIME_GROUP_OP_CONCURRENCY), the rest are short sends and one blocking read.
        "max_connections": env.int("CHANNEL_LAYER_MAX_CONNECTIONS", default=200),
        "socket_timeout": env.float("CHANNEL_LAYER_SOCKET_TIMEOUT", default=15.0),
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    # Which channels-redis design fans events out (docs/realtime.md, docs/benchmarks.md
    # "Real-time fan-out"): "pubsub" (the default) publishes one message per event and each
    # process hands it to its own members (membership in process memory, nothing to sweep
    # after a crash); "core" keeps each group's members in a Redis sorted set and pushes one
    # message per member (group expiry and renewal only mean something there).
    CHANNEL_LAYER = env.str("CHANNEL_LAYER", default="pubsub")
    if CHANNEL_LAYER not in ("core", "pubsub"):
        raise ImproperlyConfigured(f"CHANNEL_LAYER must be core or pubsub, not {CHANNEL_LAYER!r}")
    # Redis pub/sub channels belong to the server, not to a database: the database index of
    # REDIS_URL, which separates deployments, test runs and worktrees everywhere else, does
    # not separate them. Every pub/sub channel name therefore starts with this deployment's
    # prefix: CHANNEL_LAYER_PREFIX (default "asgi") and the database index, "asgi.db5.".
    # Two deployments on one Redis database, or on one server with the same index, must set
    # different CHANNEL_LAYER_PREFIX values.
    CHANNEL_LAYER_PREFIX = env.str("CHANNEL_LAYER_PREFIX", default="asgi")
    if CHANNEL_LAYER == "pubsub":
        from config import channel_layer

        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {
                    "hosts": [CHANNEL_REDIS_HOST],
                    "prefix": pubsub_prefix(CHANNEL_LAYER_PREFIX, REDIS_URL),
                    # msgpack, decoded once per event and process, not once per member
                    # (config/channel_layer.py).
                    "serializer_format": channel_layer.register(),
                },
            }
        }
    else:
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": [CHANNEL_REDIS_HOST],
                    "capacity": 1000,
                    "expiry": 60,
                    "group_expiry": REALTIME_GROUP_EXPIRY_SECONDS,
                },
            }
        }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}

# Seconds between SSE heartbeat comments (keeps proxies from closing idle streams).
SSE_HEARTBEAT_SECONDS = env.float("SSE_HEARTBEAT_SECONDS", default=15.0)
# An open WebSocket that only listens re-checks its user and tenant before passing on an
# event when the last check is older than this (every client frame re-checks anyway).
REALTIME_RECHECK_SECONDS = env.float("REALTIME_RECHECK_SECONDS", default=10.0)

# Streamed answers: pieces are joined into one message.delta event per this many seconds
# (the first piece goes out at once), or sooner once this many characters are held. Each
# delta is a send to every listener; word-by-word deltas were thousands of sends per reply.
REALTIME_DELTA_FLUSH_SECONDS = env.float("REALTIME_DELTA_FLUSH_SECONDS", default=0.04)
REALTIME_DELTA_FLUSH_CHARS = env.int("REALTIME_DELTA_FLUSH_CHARS", default=400)
# Open WebSockets one user may hold on one web process; the next is closed with 4409.
REALTIME_MAX_SOCKETS_PER_USER = env.int("REALTIME_MAX_SOCKETS_PER_USER", default=50)
# Frames waiting for a WebSocket client that does not read: past the first bound transient
# events (deltas, typing) are dropped; past the second the socket is closed with 4408
# ("resume from your last seq"). Together they bound a slow reader's memory.
REALTIME_OUTBOX_TRANSIENT_LIMIT = env.int("REALTIME_OUTBOX_TRANSIENT_LIMIT", default=100)
REALTIME_OUTBOX_LIMIT = env.int("REALTIME_OUTBOX_LIMIT", default=500)
