"""Audit list latency on a large table: first page vs deep keyset pages vs OFFSET.

    .venv/bin/python bench/audits_list.py [--records 100000]

Runs against whatever DATABASE_URL names, in a throwaway database (PostgreSQL:
``bench_audits``, dropped at the end; SQLite: in memory). It fills one tenant's chain with
N valid hash-chained records (plus 20% spread over 20 other tenants), then times the real
endpoint (JWT auth, middleware, serializer) for the first page and for pages deep in the
trail reached by cursor, and the same depth read with LIMIT/OFFSET for comparison.
Prints figures; asserts nothing about them.
"""

import argparse
import base64
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402


def timed(fn, repeat=7):
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), result


def fill(tenant, count, *, actor=None, start=None):
    """Bulk-appends ``count`` valid chained records (what audit_record does, in batches)."""
    from datetime import timedelta

    from audits.hashing import GENESIS_HASH
    from audits.models import AuditChain, AuditRecord, chain_key

    chain, _ = AuditChain.objects.get_or_create(key=chain_key(tenant.id), defaults={"tenant": tenant})
    prev, seq = chain.last_hash or GENESIS_HASH, chain.last_seq
    start = start or timezone.now() - timedelta(days=365)
    step = timedelta(days=365) / max(count, 1)
    actions = ["auth.login", "conversation.created", "message.sent", "run.completed", "run.failed"]
    batch = []
    for n in range(count):
        seq += 1
        record = AuditRecord(
            tenant_id=tenant.id,
            actor_id=actor.id if actor and n % 3 == 0 else None,
            actor_label=actor.email if actor and n % 3 == 0 else "",
            action=actions[n % len(actions)],
            resource_type="conversation",
            resource_id=str(n % 5000),
            details={"n": n},
            request_id=f"bench-{n}",
            ip="127.0.0.1",
            user_agent="bench",
            created_at=start + step * n,
            chain_seq=seq,
            prev_hash=prev,
        )
        record.hash = record.compute_hash()
        prev = record.hash
        batch.append(record)
        if len(batch) == 5000:
            AuditRecord.objects.bulk_create(batch)
            batch = []
    AuditRecord.objects.bulk_create(batch)
    AuditChain.objects.filter(pk=chain.pk).update(last_seq=seq, last_hash=prev)


def cursor_at(created_at) -> str:
    # DRF's cursor: base64 of "o=<offset>&r=<reverse>&p=<position of the first ordering field>".
    return base64.b64encode(urlencode({"o": 0, "r": 0, "p": str(created_at)}).encode()).decode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()

    setup_test_environment()
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.postgresql":
        db.setdefault("TEST", {})["NAME"] = "bench_audits"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        run(args.records)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run(total):
    from rest_framework.test import APIClient

    from accounts.services import tokens_for
    from audits.models import AuditRecord
    from audits.services import audit_record
    from tests.accounts.factories import TenantFactory, UserFactory

    print(f"database: {connection.vendor}, records in the measured tenant: {total:,}")
    tenant = TenantFactory(name="Bench", tier="enterprise")  # rate limit out of the way
    owner = UserFactory(tenant=tenant, role="owner")
    started = time.perf_counter()
    with transaction.atomic():
        fill(tenant, total, actor=owner)
        for _ in range(20):
            fill(TenantFactory(), total // 100)
    fill_s = time.perf_counter() - started
    print(f"inserted {AuditRecord.objects.count():,} records in {fill_s:.1f} s (bulk, hashes computed)")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE audits_auditrecord")

    appends = 500
    started = time.perf_counter()
    for n in range(appends):
        audit_record(tenant=tenant, actor=owner, action="message.sent", resource_type="message", resource_id=n)
    per_append = (time.perf_counter() - started) * 1000 / appends
    print(f"audit_record(): {per_append:.2f} ms per record (own transaction each, {appends} appends)")

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_for(owner).access}")
    rows = AuditRecord.objects.filter(tenant=tenant).order_by("-created_at", "-id")

    def page(url):
        response = client.get(url)
        assert response.status_code == 200, response.content[:300]
        return response.json()

    print(f"\n{'request':<58} {'median ms':>10}")
    ms, body = timed(lambda: page("/api/v1/audits?page_size=50"))
    print(f"{'first page (page_size=50)':<58} {ms:>10.2f}")
    ms, _ = timed(lambda: page(body["next"].replace("http://testserver", "")))
    print(f"{'second page (next cursor)':<58} {ms:>10.2f}")
    count = rows.count()
    for depth in (count // 2, count - 100):
        position = rows.values_list("created_at", flat=True)[depth]
        url = f"/api/v1/audits?page_size=50&cursor={cursor_at(position)}"
        ms, deep = timed(lambda url=url: page(url))
        assert len(deep["results"]) == 50
        print(f"{f'page at depth {depth:,} (cursor)':<58} {ms:>10.2f}")
        ms, _ = timed(lambda p=position: list(rows.filter(created_at__lt=p).values_list("id", flat=True)[:50]))
        print(f"{'  query only, keyset (WHERE created_at < p LIMIT 50)':<58} {ms:>10.2f}")
        ms, _ = timed(lambda depth=depth: list(rows.values_list("id", flat=True)[depth : depth + 50]))
        print(f"{f'  query only, OFFSET {depth:,} LIMIT 50':<58} {ms:>10.2f}")
    member_filter = f"/api/v1/audits?page_size=50&action=run.failed&cursor={cursor_at(position)}"
    ms, _ = timed(lambda: page(member_filter))
    print(f"{'deep page filtered by action (cursor)':<58} {ms:>10.2f}")

    ms, _ = timed(lambda: b"".join(client.get("/api/v1/audits/export?format=jsonl").streaming_content), repeat=1)
    print(f"{f'export jsonl of {count:,}+ records (streamed)':<58} {ms:>10.2f}")
    from audits.models import AuditChain
    from audits.selectors import audit_chain_verify

    ms, report = timed(lambda: audit_chain_verify(chain=AuditChain.objects.get(tenant=tenant)), repeat=1)
    print(f"{f'verify chain ({report.checked:,} records, ok={report.ok})':<58} {ms:>10.2f}")
    print("\nplan of the deep page query:")
    cutoff = rows.values_list("created_at", flat=True)[count - 100]
    print(rows.filter(created_at__lt=cutoff)[:51].explain())


if __name__ == "__main__":
    main()
