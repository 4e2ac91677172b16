"""CPU cost of the 202 path, one request at a time through the whole ASGI application.

    .venv/bin/python bench/accept_cpu.py [--requests 200] [--concurrency 1] [--before DIR] [--profile FILE]

``POST /api/v1/conversations/{id}/messages`` (202, the agent run queued), against the
database ``make bench`` (or ``bench/seed.py``) seeded (BENCH_DATABASE_URL /
BENCH_REDIS_URL, or DATABASE_URL / REDIS_URL): its 50 members post in turn, each to their
own conversation, as the harness's ``messages`` row does. Celery is not eager: the runs are
published to the Redis broker (nothing consumes them here; ``celery -A config purge -f``
after), the events to the Redis channel layer, the audit seal requested, so every piece of
after-commit work the server does is in the figure. Each tree (this one, and ``--before
DIR``, another checkout of the code) runs in its own process; the figure is the median of
five rounds of ``--requests`` requests of CPU time per request (``time.process_time``:
every thread of the process, the publisher threads included) and of wall time per request
(with ``--concurrency 1``, one client, so no queueing: the latency floor; with more,
requests share the process as under the harness's 50 users, and work done per batch is
shared out). ``--profile FILE`` also writes a cProfile
of one more round of this tree (every thread is not covered: the calling thread's view).
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
from accounts.models import User
from accounts.services import tokens_for
from conversations.models import Conversation
from config.asgi import application
from inprocess import asgi_request, http_scope

N = int(sys.argv[1])
CONCURRENCY = int(sys.argv[2])
PROFILE = sys.argv[3] if len(sys.argv) > 3 else ""
targets = []
for user in User.objects.filter(email__startswith="user", tenant__slug="bench").order_by("pk"):
    conversation = Conversation.objects.filter(owner=user).order_by("pk").first()
    if conversation is not None:
        targets.append((f"/api/v1/conversations/{conversation.pk}/messages/", tokens_for(user).access))
assert targets, "no bench members: seed the database with bench/seed.py first"
BODY = b'{"content": "hello from the bench"}'
counter = [0]


async def one():
    path, token = targets[counter[0] % len(targets)]
    counter[0] += 1
    status = await asgi_request(application, http_scope("POST", path, token=token, body=BODY), BODY)
    assert status == 202, status
    return status


async def many(n):
    # n requests, CONCURRENCY of them in flight at a time.
    gate = asyncio.Semaphore(CONCURRENCY)

    async def gated():
        async with gate:
            await one()

    await asyncio.gather(*(gated() for _ in range(n)))


async def main():
    await many(30)
    rounds = []
    for _ in range(5):
        cpu, wall = time.process_time(), time.perf_counter()
        await many(N)
        # Let after-commit work still in flight on other threads finish inside the round.
        await asyncio.sleep(0.05)
        rounds.append(((time.process_time() - cpu) / N * 1e6, (time.perf_counter() - wall - 0.05) / N * 1e6))
    if PROFILE:
        import cProfile
        profile = cProfile.Profile()
        profile.enable()
        await many(N)
        profile.disable()
        profile.dump_stats(PROFILE)
    print(json.dumps({"cpu_us": statistics.median(r[0] for r in rounds),
                      "wall_us": statistics.median(r[1] for r in rounds),
                      "rounds_cpu_us": [round(r[0]) for r in rounds]}))

asyncio.run(main())
"""


def measure(tree: Path, requests: int, concurrency: int, profile: str = "") -> dict:
    env = app_env(CELERY_TASK_ALWAYS_EAGER="false", AGENT_PROVIDER="local")
    env["CELERY_BROKER_URL"] = env["REDIS_URL"]
    return run_child(tree, CHILD, [str(requests), str(concurrency)] + ([profile] if profile else []), env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at a time (default 1)")
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--profile", default="", help="write a cProfile of this tree's extra round here")
    args = parser.parse_args()
    trees = ([("before", args.before)] if args.before else []) + [("this tree", ROOT)]
    for label, tree in trees:
        result = measure(tree, args.requests, args.concurrency, args.profile if tree == ROOT else "")
        print(
            f"{label:<10} POST .../messages (202) x{args.concurrency}: CPU {result['cpu_us']:.0f} us/request,"
            f" wall {result['wall_us']:.0f} us/request (rounds CPU: {result['rounds_cpu_us']})"
        )


if __name__ == "__main__":
    main()
