"""bench/seed.py's audit rows (the deep-page benchmark's 1,000,000 records) against audit
sealing: they are inserted as sealed records after the chain head (sequence, hashes and
``sealed_at`` all set, as the sealer sets them together), so the sealer never picks them up
and records the app writes during the run chain on after them."""

import importlib.util
from pathlib import Path

import pytest
from django.db import connection

from audits.models import AuditChain, AuditRecord, chain_key
from audits.services import audit_record, audit_seal_chains
from tests.accounts.factories import TenantFactory, UserFactory

SEED = Path(__file__).resolve().parents[2] / "bench" / "seed.py"

pytestmark = pytest.mark.django_db


def _seed_module():
    spec = importlib.util.spec_from_file_location("bench_seed", SEED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeded_audit_rows_are_sealed_and_the_sealer_chains_on_after_them(real_stack):
    assert connection.vendor == "postgresql", "bench/seed.py fills the table with generate_series (PostgreSQL)"
    tenant = TenantFactory()
    owner = UserFactory(tenant=tenant, role="owner")
    audit_record(tenant=tenant, actor=owner, action="auth.registered")  # written before the seed
    audit_seal_chains(tenant=tenant)

    out = _seed_module().seed_audits(tenant=tenant, owner=owner, rows=50)

    assert out["audit_rows"] == 50
    seeded = AuditRecord.objects.filter(tenant=tenant, request_id__startswith="bench-")
    assert seeded.count() == 50
    assert not seeded.filter(chain_seq__isnull=True).exists()
    assert not seeded.filter(hash__isnull=True).exists()
    assert not seeded.filter(sealed_at__isnull=True).exists()  # sealed like the sealer seals
    assert sorted(seeded.values_list("chain_seq", flat=True)) == list(range(2, 52))
    # Nothing for the sealer in the seeded rows; what the app writes next is chained after.
    later = audit_record(tenant=tenant, actor=owner, action="conversation.created")
    assert audit_seal_chains(tenant=tenant) == 1
    later.refresh_from_db()
    assert later.chain_seq == 52
    assert later.sealed_at is not None
    assert AuditChain.objects.get(key=chain_key(tenant.id)).last_seq == 52
