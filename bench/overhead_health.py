"""CPU per request of ``GET /health`` (the whole app) against the bare baseline view, in-process.

    .venv/bin/python bench/overhead_health.py [--requests 3000] [--before DIR] [--profile OUT]

Each app runs in its own process, one request at a time through its ASGI application, with
the request log on as in production (``LOG_LEVEL=INFO``, the JSON line written to a file),
``time.process_time`` over ``--requests`` requests, the median of five rounds. The bare app
is bench/bare_asgi.py (no middleware); the app needs DATABASE_URL/REDIS_URL only to start
(``/health`` touches neither). The ratio printed, bare / health, is an upper bound of what
the load harness (bench/run.py, row ``health``) can show: the server's own cost per request
(uvicorn, HTTP parsing) is added to both sides there. ``--before DIR`` measures another
checkout the same way, back to back. ``--profile OUT`` writes a cProfile of the app's rounds.
"""

import argparse
import os
from pathlib import Path

from inprocess import run_child

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, json, os, statistics, sys, time
from inprocess import asgi_request, http_scope
bare = sys.argv[2] == "bare"
if bare:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.bare_settings"
    from bench.bare_asgi import application
    path = "/bare"
else:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from config.asgi import application
    path = "/health"
N = int(sys.argv[1])
profile = sys.argv[3] if len(sys.argv) > 3 else ""

SCOPE = http_scope("GET", path, headers=[(b"user-agent", b"wrk"), (b"accept", b"*/*")])


async def one():
    return await asgi_request(application, SCOPE)


async def main():
    for _ in range(200):
        assert await one() == 200
    prof = None
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    rounds = []
    for _ in range(5):
        cpu = time.process_time()
        for _ in range(N):
            await one()
        rounds.append((time.process_time() - cpu) / N * 1e6)
    if prof:
        prof.disable()
        prof.dump_stats(profile)
    print(json.dumps({"cpu_us": statistics.median(rounds)}))

asyncio.run(main())
"""


def measure(tree: Path, kind: str, requests: int, profile: str = "") -> float:
    env = {**os.environ, "LOG_LEVEL": "INFO", "DJANGO_SECURE_SSL_REDIRECT": "false", "PYTHONPATH": str(tree)}
    return run_child(tree, CHILD, [str(requests), kind, *([profile] if profile else [])], env)["cpu_us"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--profile", default="")
    args = parser.parse_args()
    trees = ([("before", args.before)] if args.before else []) + [("this tree", ROOT)]
    print(f"{'tree':<12} {'bare cpu us':>12} {'/health cpu us':>15} {'bare/health':>12}")
    for label, tree in trees:
        bare = measure(
            tree, "bare", args.requests, args.profile + ".bare" if args.profile and label == "this tree" else ""
        )
        health = measure(tree, "app", args.requests, args.profile if label == "this tree" else "")
        print(f"{label:<12} {bare:>12.1f} {health:>15.1f} {bare / health:>12.2f}")


if __name__ == "__main__":
    main()
