"""Audit sealing (issue 11): concurrent audited writes of ONE tenant, in records/s, and the
sealing delay (insert commit -> sealed) under that load.

    .venv/bin/python bench/audit_sealing.py [--threads 8] [--seconds 8]

Needs PostgreSQL (DATABASE_URL) and Redis (REDIS_URL): it runs in a throwaway database
(``bench_audit_sealing``, dropped at the end) and, when the code seals off the request path,
starts one real Celery worker on that database (the production path: each commit asks for
a debounced ``seal_chains`` task). Run the same script from a checkout of the code before
sealing (records chained inside the request's transaction) for the "before" figures; there
the delay is 0 by construction. Prints figures; asserts nothing about them.

Workloads, each ``--threads`` threads writing as fast as they can for ``--seconds``:
- custom: ``audit_custom_record`` alone, one transaction each (POST /audits without HTTP);
- conversation: ``conversation_create`` through the service (INSERTs + its audit record);
- request: ``audit_record`` and then 5 ms more work in the same transaction (a request that
  records first and goes on: a chat turn records ``message.sent`` and then runs the agent).
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost")
os.environ.setdefault("DB_POOL_MAX_SIZE", "24")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

DB_NAME = "bench_audit_sealing"


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def start_worker(db_url: str) -> tuple[subprocess.Popen, Path]:
    log = Path(f"/tmp/bench-audit-worker-{uuid.uuid4().hex[:8]}.log")
    env = {**os.environ, "DATABASE_URL": db_url, "CELERY_TASK_ALWAYS_EAGER": "false", "DB_POOL_MAX_SIZE": "4"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "config",
                "worker",
                "--pool=prefork",
                "--concurrency=1",
                "-Q",
                "default",
                "-n",
                f"bench-{uuid.uuid4().hex[:8]}@%h",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "--loglevel=INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while " ready." not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            raise SystemExit(f"worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc, log


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql" or not os.environ.get("REDIS_URL"):
        raise SystemExit("needs DATABASE_URL (PostgreSQL) and REDIS_URL")
    setup_test_environment()
    db.setdefault("TEST", {})["NAME"] = DB_NAME
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    worker = None
    try:
        from audits import services

        sealing = hasattr(services, "audit_seal_chains")
        if sealing:
            from config.celery import app

            app.conf.task_always_eager = False  # the real stack: commits ask the worker
            url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + DB_NAME
            worker, log = start_worker(url)
            print(
                f"sealing off the request path: one Celery worker (log {log}),"
                f" AUDIT_SEAL_DELAY_SECONDS={settings.AUDIT_SEAL_DELAY_SECONDS}"
            )
        else:
            print("sealing inside the request's transaction (the code before issue 11)")
        for workload in ("custom", "conversation", "request"):
            run(workload, args.threads, args.seconds, sealing)
    finally:
        if worker is not None:
            os.killpg(worker.pid, 15)
            worker.wait(30)
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run(workload: str, threads: int, seconds: float, sealing: bool) -> None:
    from audits.models import AuditChain, AuditRecord, chain_key
    from audits.selectors import audit_chain_verify
    from audits.services import audit_custom_record, audit_record
    from conversations.services import conversation_create
    from tests.accounts.factories import TenantFactory, UserFactory

    tenant = TenantFactory(name=f"Bench {workload}", tier="enterprise")
    owner = UserFactory(tenant=tenant, role="owner")

    def write():
        if workload == "custom":
            return audit_custom_record(actor=owner, action="custom.bench.event", details={"n": 1}).pk
        if workload == "conversation":
            # The conversation's id: its audit record is found after the run (no extra
            # query inside the measured transaction).
            return conversation_create(user=owner, title="bench").pk
        record = audit_record(tenant=tenant, actor=owner, action="message.sent", resource_type="message")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.005)")  # the rest of the request's transaction
        return record.pk

    commits: list[tuple[int, float]] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(threads)
    deadline_holder = {}

    def loop():
        mine = []
        try:
            barrier.wait()
            while time.monotonic() < deadline_holder["at"]:
                with transaction.atomic():
                    pk = write()
                mine.append((pk, time.time()))
        except Exception as exc:  # noqa: BLE001 - reported
            errors.append(exc)
        finally:
            commits.extend(mine)
            connection.close()

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    deadline_holder["at"] = time.monotonic() + seconds + 0.5
    started = time.monotonic()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - started - 0.5
    count = len(commits)
    line = f"{workload:>12}: {threads} threads, {count} transactions in {elapsed:.1f} s = {count / elapsed:,.0f} /s"
    if errors:
        line += f", {len(errors)} errors ({errors[0]!r})"
    records = AuditRecord.objects.filter(tenant=tenant)
    if workload == "conversation":
        by_conversation = dict(records.values_list("resource_id", "pk"))
        commits = [(by_conversation[str(pk)], at) for pk, at in commits]
    if sealing:
        wait_until = time.monotonic() + 60
        while records.filter(chain_seq__isnull=True).exists() and time.monotonic() < wait_until:
            time.sleep(0.05)
        sealed_at = dict(records.values_list("pk", "sealed_at"))
        delays = [sealed_at[pk].timestamp() - at for pk, at in commits if sealed_at.get(pk)]
        if delays:
            line += (
                f"; sealing delay p50 {percentile(delays, 0.5) * 1000:.0f} ms,"
                f" p95 {percentile(delays, 0.95) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms"
                f" (mean {statistics.mean(delays) * 1000:.0f} ms)"
            )
    report = audit_chain_verify(chain=AuditChain.objects.get(key=chain_key(tenant.pk)))
    line += f"; chain {'verifies' if report.ok else 'BROKEN'} ({report.checked} records)"
    print(line, flush=True)


if __name__ == "__main__":
    main()
