"""CPU cost of the read paths, one request at a time through the whole ASGI application.

    .venv/bin/python bench/read_paths_cpu.py [--requests 300] [--before DIR]

Runs against the database ``make bench`` seeded (BENCH_DATABASE_URL / BENCH_REDIS_URL, or
DATABASE_URL / REDIS_URL): its enterprise owner ``owner@bench.example`` and the million
audit rows. Each tree (this one, and ``--before DIR``, another checkout of the code) runs
in its own process; the figure is the median of five rounds of ``--requests`` requests of
CPU time per request (``time.process_time``, every thread of the process), which a
shared machine's load moves far less than wall-clock throughput. Scenarios: ``GET
/api/v1/auth/me``, the audits list page 1 (20 rows) and a 50-row page, the idempotent
replay (``POST /api/v1/conversations/``, the same key and body: one creation, then
replays).
"""

import argparse
from pathlib import Path

from inprocess import app_env, run_child

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, json, os, secrets, statistics, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from accounts.models import User
from accounts.services import tokens_for
from config.asgi import application
from inprocess import asgi_request, http_scope

N = int(sys.argv[1])
token = tokens_for(User.objects.get(email="owner@bench.example")).access
replay_key = "cpu-replay-" + secrets.token_hex(4)


async def one(method, path, query=b"", body=b"", extra=()):
    return await asgi_request(application, http_scope(method, path, token=token, body=body, query=query, headers=extra), body)


async def run(args, expect):
    for _ in range(30):
        await one(*args)
    rounds = []
    for _ in range(5):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(N):
            got = await one(*args)
            assert got == expect, (args, got)
        rounds.append(((time.process_time() - cpu) / N * 1e6, (time.perf_counter() - wall) / N * 1e6))
    return {"cpu_us": statistics.median(r[0] for r in rounds), "wall_us": statistics.median(r[1] for r in rounds)}


async def main():
    out = {}
    for name, args, expect in (
        ("GET /api/v1/auth/me", ("GET", "/api/v1/auth/me"), 200),
        ("GET /api/v1/audits/ (20 rows)", ("GET", "/api/v1/audits/"), 200),
        ("GET /api/v1/audits/ (50 rows)", ("GET", "/api/v1/audits/", b"page_size=50"), 200),
        ("idempotent replay", ("POST", "/api/v1/conversations/", b"", b'{"title": "replayed"}',
                               [(b"idempotency-key", replay_key.encode())]), 201),
    ):
        out[name] = await run(args, expect)
    print(json.dumps(out))

asyncio.run(main())
"""


def measure(tree: Path, requests: int) -> dict:
    return run_child(tree, CHILD, [str(requests)], app_env())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--before", type=Path, default=None)
    args = parser.parse_args()
    trees = ([("before", args.before)] if args.before else []) + [("this tree", ROOT)]
    results = {label: measure(tree, args.requests) for label, tree in trees}
    print(f"{'scenario':<32} " + " ".join(f"{label + ' cpu/wall us':>28}" for label, _ in trees))
    for name in results[trees[0][0]]:
        cells = " ".join(
            f"{results[label][name]['cpu_us']:>15.0f} /{results[label][name]['wall_us']:>10.0f}" for label, _ in trees
        )
        print(f"{name:<32} {cells}")


if __name__ == "__main__":
    main()
