"""CPU cost of one request through the whole ASGI application, in-process, one at a time.

    .venv/bin/python bench/overhead_inprocess.py [--requests 2000] [--before DIR]

A shared machine's load swings wall-clock figures (bench/overhead.py); CPU time per request
(``time.process_time``, all threads of the process) moves far less. Each tree (this one,
and ``--before DIR``, another checkout) runs in its own process against DATABASE_URL and
REDIS_URL (migrated and seeded by bench/overhead.py, run it once first). Scenarios as in
bench/overhead.py. Prints the median of five rounds of ``--requests`` requests each.
"""

import argparse
import os
from pathlib import Path

from inprocess import run_child

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, json, os, statistics, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from accounts.models import User
from accounts.services import tokens_for
from config.asgi import application
from inprocess import asgi_request, http_scope

N = int(sys.argv[1])
big = tokens_for(User.objects.get(email="bench-big@example.com")).access
small = tokens_for(User.objects.get(email="bench-small@example.com")).access


def scope(path, token):
    return http_scope("GET", path, token=token)


async def one(s):
    return await asgi_request(application, s)


async def run(path, token, expect):
    s = scope(path, token)
    for _ in range(50):
        await one(s)
    rounds = []
    for _ in range(5):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(N):
            got = await one(s)
            assert got in expect, (path, got)
        rounds.append(((time.process_time() - cpu) / N * 1e6, (time.perf_counter() - wall) / N * 1e6))
    return {"cpu_us": statistics.median(r[0] for r in rounds), "wall_us": statistics.median(r[1] for r in rounds)}


async def main():
    out = {}
    for name, path, token, expect in (
        ("GET /health", "/health", None, {200}),
        ("GET /api/v1/auth/me", "/api/v1/auth/me", big, {200}),
        # A new one-minute window lets its first request through.
        ("429 (budget spent)", "/api/v1/auth/me", small, {429, 200}),
    ):
        out[name] = await run(path, token, expect)
    print(json.dumps(out))

asyncio.run(main())
"""


def measure(tree: Path, requests: int) -> dict:
    env = {
        **os.environ,
        "RATE_LIMIT_ENTERPRISE": "100000000",
        "RATE_LIMIT_FREE": "1",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
    }
    return run_child(tree, CHILD, [str(requests)], env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--before", type=Path, default=None)
    args = parser.parse_args()
    trees = ([("before", args.before)] if args.before else []) + [("this tree", ROOT)]
    results = {label: measure(tree, args.requests) for label, tree in trees}
    print(f"{'scenario':<24} " + " ".join(f"{label + ' cpu/wall us':>28}" for label, _ in trees))
    for name in results[trees[0][0]]:
        cells = " ".join(
            f"{results[label][name]['cpu_us']:>15.0f} /{results[label][name]['wall_us']:>10.0f}" for label, _ in trees
        )
        print(f"{name:<24} {cells}")


if __name__ == "__main__":
    main()
