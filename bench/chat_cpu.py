"""CPU cost of a chat turn, one request at a time through the whole ASGI application.

    .venv/bin/python bench/chat_cpu.py [--requests 100] [--before DIR]

Runs against DATABASE_URL / REDIS_URL (migrated; point them at a benchmark database: a
tenant ``chatcpu`` and its owner are created when missing). Each tree (this one, and
``--before DIR``, another checkout of the code) runs in its own process; figures are the
median of five rounds of ``--requests`` requests (the lowest of ``--repeat`` runs, the trees
alternating): CPU time per request
(``time.process_time``, every thread of the process), wall time per request, and for the
SSE stream the wall time to its first event (``message.created``). Scenarios: ``POST /api/v1/chat`` (the local
agent, one tool call, a new conversation each time, like ``make bench``) and
``POST /api/v1/chat/stream``.
"""

import argparse
from pathlib import Path

from inprocess import app_env, run_child

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, json, os, statistics, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from accounts.models import Tenant, User
from accounts.services import tokens_for
from config.asgi import application
from inprocess import asgi_request, http_scope

N = int(sys.argv[1])
tenant, _ = Tenant.objects.get_or_create(slug="chatcpu", defaults={"name": "chatcpu", "tier": Tenant.Tier.ENTERPRISE})
user = User.objects.filter(email="chatcpu@example.com").first() or User.objects.create_user(
    "chatcpu@example.com", None, tenant=tenant, role="owner")
token = tokens_for(user).access
BODY = json.dumps({"message": "add a task to buy milk"}).encode()

async def one(path):
    first = []
    started = time.perf_counter()

    def on_body(message):
        if not first and b"event:" in message.get("body", b""):
            first.append(time.perf_counter() - started)

    status = await asgi_request(application, http_scope("POST", path, token=token, body=BODY), BODY, on_body)
    assert status == 200, status
    return first[0] if first else None


async def run(path):
    for _ in range(10):
        await one(path)
    rounds = []
    for _ in range(5):
        cpu, wall, firsts = time.process_time(), time.perf_counter(), []
        for _ in range(N):
            firsts.append(await one(path))
        rounds.append(((time.process_time() - cpu) / N * 1e6, (time.perf_counter() - wall) / N * 1e6,
                       statistics.median(firsts) * 1e6 if firsts[0] is not None else 0))
    return {"cpu_us": statistics.median(r[0] for r in rounds), "wall_us": statistics.median(r[1] for r in rounds),
            "first_us": statistics.median(r[2] for r in rounds)}


async def main():
    out = {}
    for name, path in (("POST /api/v1/chat", "/api/v1/chat"), ("POST /api/v1/chat/stream", "/api/v1/chat/stream")):
        out[name] = await run(path)
    print(json.dumps(out))

asyncio.run(main())
"""


def measure(tree: Path, requests: int) -> dict:
    return run_child(tree, CHILD, [str(requests)], app_env(bench_database=False, AGENT_PROVIDER="local"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tree, alternating; the lowest is kept")
    args = parser.parse_args()
    trees = ([("before", args.before)] if args.before else []) + [("this tree", ROOT)]
    runs = {label: [] for label, _ in trees}
    for _ in range(args.repeat):
        for label, tree in trees:
            runs[label].append(measure(tree, args.requests))
    # On a shared machine other work only ever adds time: the lowest run is the closest to
    # the code's own cost.
    results = {
        label: {
            name: {key: min(run[name][key] for run in measured) for key in measured[0][name]} for name in measured[0]
        }
        for label, measured in runs.items()
    }
    print(f"{'scenario':<28} " + " ".join(f"{label + ' cpu/wall/first-event us':>40}" for label, _ in trees))
    for name in results[trees[0][0]]:
        cells = " ".join(
            f"{r['cpu_us']:>12.0f} /{r['wall_us']:>10.0f} /{r['first_us']:>10.0f}"
            for r in (results[label][name] for label, _ in trees)
        )
        print(f"{name:<28} {cells}")


if __name__ == "__main__":
    main()
