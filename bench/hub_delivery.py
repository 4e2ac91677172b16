"""Messaging hub: acceptance latency under concurrent users, and API-to-delivered latency.

    .venv/bin/python bench/hub_delivery.py [--users 50] [--messages 10] [--latency-ms 100]
        [--port 18550] [--pool threads] [--concurrency 32] [--idle N] [--server gunicorn|daphne]
        [--accounts K]

Needs the real stack (DATABASE_URL on PostgreSQL, REDIS_URL): it creates a throwaway
database, starts the web server as ``make run`` does (gunicorn with one uvicorn worker,
config/gunicorn.py; ``--server daphne`` for the earlier rounds' figures) and the delivery
worker (`make hub-worker`: ``-Q hub``, ``--pool`` ``--concurrency``) on it, with the app's
own settings (the database pool's size included), and makes
``--users`` tenant owners, each with a WhatsApp simulator account (``--latency-ms`` per send,
statuses reported back as signed POSTs to the server's inbound webhook) and one bound
conversation (``--accounts K``: the users work for K businesses instead, each with one
number, every user talking to a contact of their own). Each user then posts ``--messages`` messages over HTTP, one after another,
all users at once. Prints figures; asserts nothing about them.

- acceptance: ``POST …/messages`` until its 202 (message stored ``accepted``, delivery row,
  audit), as the client sees it.
- delivery: from the client sending the POST to the ``delivered`` status stored (the
  simulator's signed report handled by the web server), on this machine's one clock.
The machine's load average is printed before and after (figures on a shared machine are
noisy: compare runs made back to back).
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(name: str, samples: list[float], unit: str = "ms") -> str:
    return (
        f"{name}: n={len(samples)}  median {statistics.median(samples):.0f} {unit}   "
        f"p95 {percentile(samples, 0.95):.0f} {unit}   max {max(samples):.0f} {unit}"
    )


def start(
    env: dict, port: int, concurrency: int, logs: Path, pool: str = "threads", server: str = "gunicorn"
) -> list[subprocess.Popen]:
    bin_dir = ROOT / ".venv" / "bin"
    if server == "daphne":
        argv = [str(bin_dir / "daphne"), "-v", "0", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
    else:  # make run / make serve, one web process
        argv = [str(bin_dir / "gunicorn"), "-c", "config/gunicorn.py", "-b", f"127.0.0.1:{port}"]
        argv.append("config.asgi:application")
    web = subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**env, "WEB_CONCURRENCY": "1"},
        stdout=open(logs / "web.log", "wb"),  # noqa: SIM115 - lives as long as the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = subprocess.Popen(
        [
            str(bin_dir / "celery"),
            "-A",
            "config",
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            "--loglevel=WARNING",
            "-Q",
            "hub",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=open(logs / "worker.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1, trust_env=False).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        raise SystemExit(f"the web server did not start; see {logs / 'web.log'}")
    time.sleep(3)  # the worker's pool
    return [web, worker]


def stop(procs: list[subprocess.Popen]) -> None:
    import signal

    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def print_stages(message_ids: list[int]) -> None:
    from hub.models import MessageStatusChange

    stages: dict[int, dict] = {}
    for mid, status, at in MessageStatusChange.objects.filter(message_id__in=message_ids).values_list(
        "message_id", "status", "at"
    ):
        stages.setdefault(mid, {})[status] = at
    for name, first, last in (
        ("accepted -> queued", "accepted", "queued"),
        ("queued -> sent", "queued", "sent"),
        ("sent -> delivered", "sent", "delivered"),
    ):
        spans = [(s[last] - s[first]).total_seconds() * 1000 for s in stages.values() if first in s and last in s]
        if spans:
            print("    " + figures(name, spans))


def idle_run(args, base_url: str, client: tuple[str, int]) -> None:
    """One message at a time on an idle stack: what a delivery costs without queueing
    (the worker's pickup, the send, the report)."""
    from hub.models import MessageStatusChange

    token, conversation_id = client
    delivery, ids = [], []
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30, trust_env=False
    ) as http:
        for i in range(args.idle):
            began = time.time()
            response = http.post(f"/api/v1/conversations/{conversation_id}/messages", json={"content": f"Idle {i}"})
            mid = response.json()["message"]["id"]
            ids.append(mid)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                at = MessageStatusChange.objects.filter(message_id=mid, status="delivered").values_list("at", flat=True)
                if at:
                    delivery.append((at[0].timestamp() - began) * 1000)
                    break
                time.sleep(0.02)
            time.sleep(0.3)
    print(
        f"hub delivery, idle: 1 user x {args.idle} messages one at a time, latency {args.latency_ms} ms, "
        f"delivery worker {args.pool} x {args.concurrency}"
    )
    if delivery:
        print("  " + figures("delivery (POST -> delivered)", delivery))
    print_stages(ids)


def main():
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--port", type=int, default=18550)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pool", default="threads", help="the delivery worker's pool (make hub-worker: threads)")
    parser.add_argument(
        "--accounts",
        type=int,
        default=0,
        help="users share this many businesses (tenant + WhatsApp number; 0: one each), each user its own contact",
    )
    parser.add_argument("--server", default="gunicorn", choices=["gunicorn", "daphne"], help="make run: gunicorn")
    parser.add_argument(
        "--idle", type=int, default=0, help="instead: one user posts this many messages, each after the last delivered"
    )
    args = parser.parse_args()
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql" or not os.environ.get("REDIS_URL"):
        raise SystemExit("needs DATABASE_URL (PostgreSQL) and REDIS_URL")
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"bench_hub_{connection.settings_dict['NAME']}"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    db_name = connection.settings_dict["NAME"]
    base_url = f"http://127.0.0.1:{args.port}"
    db_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + db_name
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "HUB_WEBHOOK_BASE_URL": base_url,
        "RATE_LIMIT_FREE": "1000000",
        "DJANGO_ALLOWED_HOSTS": os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost"),
        "LOG_LEVEL": "WARNING",
        # Plain http on 127.0.0.1 (as the e2e tests): no redirect to https.
        "DJANGO_SECURE": "false",
    }
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"hub-bench-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        from accounts.models import Tenant, User
        from accounts.services import tokens_for
        from hub.models import MessageStatusChange
        from hub.services import accounts, bindings

        clients, shared = [], {}
        for n in range(args.users):
            # --accounts K: user n works for business n % K (its tenant, its one number).
            k = n % args.accounts if args.accounts else n
            if k not in shared:
                tenant = Tenant.objects.create(name=f"Bench {k}", slug=f"bench-{k}")
            else:
                tenant = shared[k][0]
            user = User.objects.create_user(f"b{n}@example.com", "bench-passphrase-123", tenant=tenant, role="owner")
            if k not in shared:
                account, _ = accounts.channel_account_create(
                    user=user,
                    channel="whatsapp",
                    name="Bench",
                    external_id=f"1555{k:07d}",
                    settings={"latency_ms": args.latency_ms},
                )
                shared[k] = (tenant, account)
            account = shared[k][1]
            binding = bindings.binding_create(user=user, account_id=account.pk, address=f"4477{n:07d}")
            clients.append((tokens_for(user).access, binding.conversation_id))
        connection.close()
        print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        procs = start(env, args.port, args.concurrency, logs, args.pool, args.server)
        if args.idle:
            idle_run(args, base_url, clients[0])
            return

        accepted: list[float] = []
        sent_at: dict[int, float] = {}
        errors: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(args.users)

        def user_loop(token: str, conversation_id: int) -> None:
            with httpx.Client(
                base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30, trust_env=False
            ) as http:
                barrier.wait()
                for i in range(args.messages):
                    began_wall, began = time.time(), time.perf_counter()
                    response = http.post(
                        f"/api/v1/conversations/{conversation_id}/messages", json={"content": f"Order {i} shipped"}
                    )
                    elapsed = (time.perf_counter() - began) * 1000
                    with lock:
                        if response.status_code != 202:
                            errors.append(f"{response.status_code} {response.text[:200]}")
                            continue
                        accepted.append(elapsed)
                        sent_at[response.json()["message"]["id"]] = began_wall

        threads = [threading.Thread(target=user_loop, args=client) for client in clients]
        wall = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        posting = time.perf_counter() - wall

        deadline = time.monotonic() + 180
        delivered = {}
        while time.monotonic() < deadline:
            delivered = dict(
                MessageStatusChange.objects.filter(message_id__in=list(sent_at), status="delivered").values_list(
                    "message_id", "at"
                )
            )
            if len(delivered) == len(sent_at):
                break
            time.sleep(0.5)
        all_done = time.perf_counter() - wall
        delivery = [(at.timestamp() - sent_at[mid]) * 1000 for mid, at in delivered.items()]

        total = args.users * args.messages
        print(
            f"hub delivery: {args.users} concurrent users x {args.messages} messages, WhatsApp simulator "
            f"latency {args.latency_ms} ms, 1 web process ({args.server}), 1 delivery worker "
            f"({args.pool} x {args.concurrency})"
        )
        if accepted:
            print("  " + figures("acceptance (POST -> 202)", accepted))
        print(f"  posting throughput {len(accepted) / posting:.0f} messages/s; errors {len(errors)}")
        if delivery:
            print("  " + figures("delivery (POST -> delivered)", delivery))
        print(f"  delivered {len(delivered)}/{total} within {all_done:.1f} s of the first post")
        # One webhook's moves share their time (one statement): distinct times ~ notifications.
        print(f"  delivered reports arrived in ~{len(set(delivered.values()))} notifications")
        print_stages(list(delivered))
        for error in errors[:5]:
            print(f"  error: {error}")
        print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        stop(procs)
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
