"""Issue 11, audit sealing on the real stack: daphne answers a custom audit event unsealed
(the request only INSERTs it), and the Celery worker seals it, in order, within the bound,
asked by the commit itself (no beat running here)."""

import io
import time

import httpx
import pytest
from django.core.management import call_command

from audits.models import AuditRecord

from .conftest import register, wait_for

pytestmark = pytest.mark.timeout(120)

# The documented delay is well under a second (docs/benchmarks.md, "Audit sealing"); the
# test allows more for a loaded shared machine, and still fails if only a beat would seal.
SEAL_BOUND = 4.0


def test_the_worker_seals_posted_events_in_order_within_the_bound(stack):
    stack.start_all()
    owner = register(stack)

    with httpx.Client(base_url=stack.base_url, headers=owner["headers"], timeout=10, trust_env=False) as client:
        ids = []
        for n in range(5):
            response = client.post("/api/v1/audits/", json={"action": "custom.e2e.event", "details": {"n": n}})
            assert response.status_code == 201, response.text
            body = response.json()
            assert (body["sealed"], body["hash"], body["chain_seq"]) == (False, None, None)
            ids.append(body["id"])
        posted = time.monotonic()

        def all_sealed():
            return all(client.get(f"/api/v1/audits/{pk}").json()["sealed"] for pk in ids)

        wait_for(all_sealed, timeout=SEAL_BOUND, interval=0.05, what="the worker sealing the posted events")
        took = time.monotonic() - posted

    assert took < SEAL_BOUND
    records = list(AuditRecord.objects.filter(pk__in=ids).order_by("chain_seq"))
    assert [record.pk for record in records] == ids  # committed one after the other: sealed in that order
    assert all(record.hash == record.compute_hash() for record in records)
    out = io.StringIO()
    call_command("verify_audit_chain", "--max-unsealed-age", str(SEAL_BOUND), stdout=out)
    tenant_id = records[0].tenant_id
    # register (tenant.created, user.created) and login (auth.login) were sealed first.
    assert [record.chain_seq for record in records] == [4, 5, 6, 7, 8]
    assert f"ok tenant:{tenant_id}: 8 records, head seq 8" in out.getvalue()
    assert "BROKEN" not in out.getvalue() and "STALE" not in out.getvalue()
