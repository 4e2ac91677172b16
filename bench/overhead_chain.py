"""CPU per request of the middleware chain alone: the ASGI handler's ``get_response_async``
on an ``ASGIRequest`` for ``GET /health``, no server and no thread hops, the request log on
(``LOG_LEVEL=INFO``) and written to /dev/null. Min and median of 7 rounds x 3000 requests.

    .venv/bin/python bench/overhead_chain.py [WORD ...]

Each WORD drops the middleware whose dotted path contains it (ablation: ``Api``,
``Message``; ``native ServeStatic Api`` for no middleware at all). Needs DATABASE_URL,
REDIS_URL, DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS only to start the app.
"""

import asyncio
import io
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("LOG_LEVEL", "INFO")

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/health",
    "raw_path": b"/health",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 80),
}


async def measure(handler, request_class) -> list[float]:
    async def one():
        response = await handler.get_response_async(request_class(dict(SCOPE), io.BytesIO()))
        assert response.status_code == 200, response.status_code

    for _ in range(500):
        await one()
    rounds = []
    for _ in range(7):
        started = time.process_time()
        for _ in range(3000):
            await one()
        rounds.append((time.process_time() - started) / 3000 * 1e6)
    return rounds


def main() -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.handlers.asgi import ASGIHandler, ASGIRequest

    for handler in logging.getLogger().handlers:
        if hasattr(handler, "setStream"):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - for the process's life
    drop = sys.argv[1:]
    settings.MIDDLEWARE = [path for path in settings.MIDDLEWARE if not any(word in path for word in drop)]
    rounds = asyncio.run(measure(ASGIHandler(), ASGIRequest))
    label = "drop " + ",".join(drop) if drop else "full chain"
    print(f"{label:<40} min {min(rounds):7.1f} med {statistics.median(rounds):7.1f} us")


if __name__ == "__main__":
    main()
