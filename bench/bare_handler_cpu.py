"""The bare view (bench/bare_asgi.py) under Django's handler and under the app's
(config/api/asgi_handler.py), in-process: what the ``/health`` ratio would divide by if the
bare baseline were served by the app's handler.

    .venv/bin/python bench/bare_handler_cpu.py django|app [N]          # CPU us a request, median of 5 x N
    valgrind --tool=callgrind .venv/bin/python bench/bare_handler_cpu.py app N count   # N requests, untimed
"""

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.bare_settings"
from inprocess import asgi_request, http_scope  # noqa: E402

import bench.bare_asgi  # noqa: E402  (Django set up, and its handler)
from config.api.asgi_handler import AppASGIHandler  # noqa: E402

app = AppASGIHandler() if sys.argv[1] == "app" else bench.bare_asgi.application
N = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
SCOPE = http_scope("GET", "/bare", headers=[(b"user-agent", b"wrk"), (b"accept", b"*/*")])


async def main():
    for _ in range(200):
        assert await asgi_request(app, SCOPE) == 200
    if N == 0 or sys.argv[-1] == "count":
        for _ in range(N):
            await asgi_request(app, SCOPE)
        return
    rounds = []
    for _ in range(5):
        cpu = time.process_time()
        for _ in range(N):
            await asgi_request(app, SCOPE)
        rounds.append((time.process_time() - cpu) / N * 1e6)
    print(sys.argv[1], round(statistics.median(rounds), 1))


asyncio.run(main())
