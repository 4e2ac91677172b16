"""Production serving: gunicorn as the process manager, uvicorn workers running the ASGI app.

    .venv/bin/gunicorn -c config/gunicorn.py -b 127.0.0.1:8000 config.asgi:application

``WEB_CONCURRENCY`` worker processes (default 1) share one listening socket; each serves
HTTP, SSE and WebSocket (the one app of config/asgi.py). Why this and not N daphne
processes, with the measurements: docs/serving.md.

The master never imports the app (no preload): each worker opens its own database pool,
Redis connections and event loop after the fork.
"""

import logging
import os
import sys
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from uvicorn_worker import UvicornWorker

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from config import startup  # noqa: E402  (needs BASE_DIR on sys.path)
from config.envvars import Env  # noqa: E402

_env = Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# A malformed value is one line and exit 1 (config/envvars.py), as for the settings.
try:
    # Web processes on this machine (each serves HTTP, SSE and WebSocket). More than one needs
    # REDIS_URL: the in-memory channel layer and the local-memory cache are per process.
    WEB_CONCURRENCY = _env.int("WEB_CONCURRENCY", default=1)
    # Seconds a stopping worker has to finish in-flight requests after SIGTERM before the
    # master kills it (the same setting bounds daphne's stop: config/shutdown.py).
    SHUTDOWN_GRACE_SECONDS = _env.float("SHUTDOWN_GRACE_SECONDS", default=10.0)

    # Behind a reverse proxy: the proxies' addresses (comma-separated, or "*"), whose
    # X-Forwarded-For / X-Forwarded-Proto the server then trusts for the client address
    # (REMOTE_ADDR, which audits and rate limits read). Empty: trust no header (the default).
    FORWARDED_ALLOW_IPS = _env.str("FORWARDED_ALLOW_IPS", default="")
    # WebSocket permessage-deflate (RFC 7692), offered by browsers and the websockets client.
    # Off by default: each socket has its own compressor, so an event fanned out to 500 sockets
    # was deflated 500 times (py-spy under bench/ws_fanout.py: 30% of the worker's samples) for
    # frames of a few hundred bytes. Daphne never offered it (docs/realtime.md).
    WS_PER_MESSAGE_DEFLATE = _env.bool("WS_PER_MESSAGE_DEFLATE", default=False)
except ImproperlyConfigured as exc:
    startup.fail(str(exc))

workers = WEB_CONCURRENCY
forwarded_allow_ips = FORWARDED_ALLOW_IPS or "127.0.0.1"
worker_class = "config.gunicorn.AppWorker"
bind = ["127.0.0.1:8000"]  # `-b HOST:PORT` on the command line wins
preload_app = False
# Graceful stop: uvicorn stops accepting, closes WebSockets (1012) and waits for requests;
# what is still running after the grace is cancelled, and gunicorn SIGKILLs a worker that
# is still there one second later (a sync thread that cancellation cannot reach).
# SHUTDOWN_GRACE_SECONDS=0 means no bound, as for daphne: wait for every request.
_BOUNDED = SHUTDOWN_GRACE_SECONDS > 0
graceful_timeout = int(SHUTDOWN_GRACE_SECONDS) + 1 if _BOUNDED else 365 * 24 * 3600
# A worker whose event loop stops answering gunicorn's heartbeat for this long is replaced.
timeout = 30
keepalive = 5
# No access log of the server's own: our JSON line (with its request id) is the one per
# request (config/core middleware). gunicorn's lifecycle lines go to stderr.
accesslog = None
errorlog = "-"
loglevel = _env.str("LOG_LEVEL", default="INFO").lower()
proc_name = "chat-web"
# gunicorn 26+ opens a control socket at one path per user: two servers on a machine would
# fight over it, and nothing here uses it.
control_socket_disable = True


def on_starting(server) -> None:
    """Runs once in the master before any worker is forked: a mistake in the environment is
    one line and exit 1 here, not a worker that fails to boot in a loop."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from config import startup

    startup.load_settings_or_exit()
    from django.conf import settings

    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {}).get("BACKEND", "")
    in_memory_layer = "InMemoryChannelLayer" in layer
    if server.cfg.workers > 1 and in_memory_layer:
        startup.fail(
            f"WEB_CONCURRENCY={server.cfg.workers} needs REDIS_URL: without it the channel layer "
            "and the cache live in one process's memory, so listeners on another process would "
            "never hear a message. Set REDIS_URL or WEB_CONCURRENCY=1."
        )
    startup.check_database(unreachable_is_fatal=False)


class _NoWebSocketAccessLines(logging.Filter):
    """uvicorn logs each WebSocket handshake on its error logger, even with the access log
    off: ``'<addr> - "WebSocket <path?query>" [accepted]'`` (or the status). That is an
    access line beside our own JSON line, and it carries the query string, where a client
    may send its token (``?token=``): dropped, as every "connection open/closed" line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith('%s - "WebSocket ') or message in ("connection open", "connection closed"))


class AppWorker(UvicornWorker):
    """uvicorn with uvloop and httptools where installed, WebSocket through `websockets`.

    - ``lifespan`` off: Django's ASGI handler has no lifespan protocol.
    - WebSocket compression off unless ``WS_PER_MESSAGE_DEFLATE`` (fan-out cost).
    - no access log and no ``server`` header; ``proxy_headers`` off unless
      ``FORWARDED_ALLOW_IPS`` names the proxies (uvicorn's default trusts 127.0.0.1, daphne's
      trusts nobody): the client address is the socket's, as under daphne without
      ``--proxy-headers``.
    - SIGTERM: in-flight requests get the grace, then are cancelled; open SSE streams see
      the cancellation like a client that left.
    """

    CONFIG_KWARGS = {
        "loop": "auto",
        "http": "auto",
        "ws": "auto",
        "lifespan": "off",
        "access_log": False,
        "proxy_headers": bool(FORWARDED_ALLOW_IPS),
        "server_header": False,
        "ws_per_message_deflate": WS_PER_MESSAGE_DEFLATE,
        "timeout_graceful_shutdown": max(int(SHUTDOWN_GRACE_SECONDS), 1) if _BOUNDED else None,
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        logging.getLogger("uvicorn.error").addFilter(_NoWebSocketAccessLines())


def post_worker_init(worker) -> None:
    """The worker has loaded the app: its startup heap is frozen (config/heap.py)."""
    from config import heap

    heap.settle()
