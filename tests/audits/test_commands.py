import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from freezegun import freeze_time

from audits.hashing import GENESIS_HASH
from audits.models import AuditChain, AuditRecord
from audits.services import audit_record, audit_seal_chains
from tests.accounts.factories import TenantFactory, UserFactory
from tests.audits.factories import make_records

pytestmark = pytest.mark.django_db


def verify(*args) -> str:
    out = io.StringIO()
    call_command("verify_audit_chain", *args, stdout=out)
    return out.getvalue()


def verify_broken(*args) -> str:
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("verify_audit_chain", *args, stdout=out)
    return out.getvalue()


def purge(*args) -> str:
    out = io.StringIO()
    call_command("purge_audits", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def chain(tenant):
    return make_records(tenant, 5)


# --- verify_audit_chain --------------------------------------------------------------------


def test_untouched_chains_verify(tenant, chain):
    audit_record(tenant=None, action="auth.login_failed")
    audit_seal_chains()

    out = verify()

    assert f"ok tenant:{tenant.id}: 5 records, head seq 5 hash {chain[-1].hash}, unsealed 0" in out
    assert "ok platform: 1 records" in out
    assert "BROKEN" not in out


def test_edit_through_the_orm_is_detected(tenant, chain):
    AuditRecord.objects.filter(pk=chain[2].pk).update(details={"rewritten": True})

    out = verify_broken()

    assert f"BROKEN tenant:{tenant.id} at seq 3 (record id {chain[2].id}): content does not match its hash" in out


def test_edit_through_raw_sql_is_detected(tenant, chain):
    table = AuditRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET action = %s WHERE id = %s", ["harmless.thing", chain[1].id])

    out = verify_broken("--tenant", tenant.slug)

    assert "at seq 2" in out and "record edited" in out


def test_edit_with_a_recomputed_hash_breaks_the_next_link(tenant, chain):
    forged = AuditRecord.objects.get(pk=chain[1].pk)
    forged.actor_label = "someone-else@example.com"
    forged.hash = forged.compute_hash()
    AuditRecord.objects.filter(pk=forged.pk).update(actor_label=forged.actor_label, hash=forged.hash)

    out = verify_broken()

    assert f"at seq 3 (record id {chain[2].id}): prev_hash does not match" in out


def test_deleting_a_middle_row_is_detected(tenant, chain):
    AuditRecord.objects.filter(pk=chain[2].pk).delete()

    out = verify_broken()

    assert f"BROKEN tenant:{tenant.id} at seq 3 (record id {chain[3].id}): record seq 3 is missing" in out


def test_deleting_the_newest_row_is_detected(tenant, chain):
    AuditRecord.objects.filter(pk=chain[-1].pk).delete()

    out = verify_broken()

    assert "chain ends at seq 4 but its head says 5" in out


def test_moving_a_record_to_another_tenant_is_detected(tenant, chain):
    other = TenantFactory()
    make_records(other, 2)
    AuditRecord.objects.filter(pk=chain[4].pk).update(tenant=other, chain_seq=3)

    out = verify_broken()

    assert f"BROKEN tenant:{tenant.id}" in out and f"BROKEN tenant:{other.id} at seq 3" in out


def test_deleted_chain_head_is_reported(tenant, chain):
    AuditChain.objects.filter(tenant=tenant).delete()

    out = verify_broken()

    assert f"BROKEN tenant {tenant.id}: records exist but the chain head is gone" in out


def test_one_broken_tenant_does_not_hide_the_others(tenant, chain):
    healthy = TenantFactory()
    make_records(healthy, 3)
    AuditRecord.objects.filter(pk=chain[0].pk).update(resource_id="x")

    out = verify_broken()
    only_healthy = verify("--tenant", str(healthy.id))

    assert f"ok tenant:{healthy.id}: 3 records" in out
    assert f"ok tenant:{healthy.id}" in only_healthy and "BROKEN" not in only_healthy


def test_every_broken_link_is_listed_not_only_the_first(tenant):
    chain = make_records(tenant, 8)
    # A first edit (say, one a false alarm would explain away) must not hide a second one.
    AuditRecord.objects.filter(pk=chain[1].pk).update(details={"rewritten": True})
    AuditRecord.objects.filter(pk=chain[5].pk).update(action="harmless.thing")

    out = verify_broken()

    broken = [line for line in out.splitlines() if line.startswith("BROKEN")]
    assert broken == [
        f"BROKEN tenant:{tenant.id} at seq 2 (record id {chain[1].id}): content does not match its hash (record edited)",
        f"BROKEN tenant:{tenant.id} at seq 6 (record id {chain[5].id}): content does not match its hash (record edited)",
    ]
    assert f"tenant:{tenant.id}: 2 broken link(s) in 8 records" in out


def test_a_deleted_row_and_a_later_edit_are_both_listed(tenant):
    chain = make_records(tenant, 6)
    AuditRecord.objects.filter(pk=chain[1].pk).delete()
    forged = AuditRecord.objects.get(pk=chain[4].pk)
    forged.actor_label = "someone-else@example.com"
    forged.hash = forged.compute_hash()
    AuditRecord.objects.filter(pk=forged.pk).update(actor_label=forged.actor_label, hash=forged.hash)

    out = verify_broken()

    assert f"at seq 2 (record id {chain[2].id}): record seq 2 is missing (next present is 3)" in out
    assert f"at seq 6 (record id {chain[5].id}): prev_hash does not match" in out
    # The link after the gap is reported once, as the gap, not again as a prev_hash mismatch.
    assert out.count("BROKEN") == 2


def test_unknown_tenant_option_is_an_error():
    with pytest.raises(CommandError, match="No tenant"):
        call_command("verify_audit_chain", "--tenant", "nope", stdout=io.StringIO())


# --- purge_audits ---------------------------------------------------------------------------


def _age(tenant, *, old: int, recent: int, actor=None):
    with freeze_time("2024-01-01T00:00:00Z"):
        olds = make_records(tenant, old, actor=actor)
    with freeze_time("2024-06-01T00:00:00Z"):
        recents = make_records(tenant, recent, actor=actor)
    return olds, recents


@freeze_time("2024-06-02T00:00:00Z", tick=True)
def test_purge_deletes_old_records_and_keeps_the_chain_verifiable(tenant):
    olds, recents = _age(tenant, old=4, recent=3)

    out = purge("--older-than", "30")

    assert f"tenant:{tenant.id}: deleted 4 records through seq 4" in out
    kept = list(AuditRecord.objects.filter(tenant=tenant).order_by("chain_seq"))
    assert [r.id for r in kept[:3]] == [r.id for r in recents]
    assert kept[0].prev_hash == olds[-1].hash  # the first kept record names what it continues from
    checkpoint = kept[-1]
    assert checkpoint.action == "audit.purged" and checkpoint.actor_id is None
    assert checkpoint.details["through_seq"] == 4 and checkpoint.details["through_hash"] == olds[-1].hash
    assert checkpoint.details["deleted"] == 4
    chain = AuditChain.objects.get(tenant=tenant)
    assert (chain.anchor_seq, chain.anchor_hash) == (4, olds[-1].hash)
    assert f"ok tenant:{tenant.id}: 4 records" in verify()


@freeze_time("2024-06-02T00:00:00Z", tick=True)
def test_purge_twice_and_tampering_after_purge_is_still_detected(tenant):
    _age(tenant, old=4, recent=3)
    purge("--older-than", "30")

    second = purge("--older-than", "30")
    assert "purged 0 records from 0 chain(s)" in second
    assert "ok" in verify()

    first_kept = AuditRecord.objects.filter(tenant=tenant).order_by("chain_seq").first()
    AuditRecord.objects.filter(pk=first_kept.pk).delete()
    assert "record seq 5 is missing" in verify_broken()


@freeze_time("2024-06-02T00:00:00Z", tick=True)
def test_moving_the_anchor_by_hand_is_detected(tenant):
    _age(tenant, old=4, recent=3)
    purge("--older-than", "30")
    # Someone deletes one more record and moves the anchor so the chain would start after it.
    victim = AuditRecord.objects.filter(tenant=tenant).order_by("chain_seq").first()
    AuditRecord.objects.filter(pk=victim.pk).delete()
    AuditChain.objects.filter(tenant=tenant).update(anchor_seq=victim.chain_seq, anchor_hash=victim.hash)

    out = verify_broken()

    assert "the chain's anchor is not the one its latest audit.purged record names" in out


@freeze_time("2024-06-02T00:00:00Z", tick=True)
def test_purge_everything_old_on_every_chain(tenant):
    other = TenantFactory()
    _age(tenant, old=2, recent=0)
    _age(other, old=1, recent=1)
    with freeze_time("2024-01-01T00:00:00Z"):
        audit_record(tenant=None, action="auth.login_failed")

    out = purge("--older-than", "30")

    assert "purged 4 records from 3 chain(s)" in out
    assert list(AuditRecord.objects.filter(tenant=tenant).values_list("action", flat=True)) == ["audit.purged"]
    assert AuditRecord.objects.filter(tenant=None, action="audit.purged").count() == 1
    assert "BROKEN" not in verify()
    more = audit_record(tenant=tenant, action="conversation.created")
    audit_seal_chains()
    more.refresh_from_db()
    assert more.chain_seq == 4 and "BROKEN" not in verify()


@freeze_time("2024-06-02T00:00:00Z", tick=True)
def test_purge_of_one_tenant_leaves_the_others(tenant):
    other = TenantFactory()
    _age(tenant, old=2, recent=1)
    _age(other, old=2, recent=1)

    purge("--older-than", "30", "--tenant", tenant.slug)

    assert AuditRecord.objects.filter(tenant=other).count() == 3
    assert AuditRecord.objects.filter(tenant=tenant).count() == 2
    assert AuditChain.objects.get(tenant=other).anchor_hash == GENESIS_HASH


def test_purge_requires_a_positive_age():
    with pytest.raises(CommandError):
        call_command("purge_audits", "--older-than", "0", stdout=io.StringIO())


# --- admin ----------------------------------------------------------------------------------


@pytest.fixture
def staff_client():
    staff = UserFactory(is_staff=True, is_superuser=True, tenant=TenantFactory(name="Ops"))
    client = Client()
    client.force_login(staff)
    return client


def test_admin_lists_records_without_n_plus_one(staff_client, django_assert_max_num_queries):
    tenants = [TenantFactory(name=f"Acme {n}") for n in range(3)]
    for tenant in tenants:
        make_records(tenant, 4, actor=UserFactory(tenant=tenant))
    staff_client.get("/admin/audits/auditrecord/")  # warm the session

    with django_assert_max_num_queries(12) as few:
        small = staff_client.get("/admin/audits/auditrecord/")
    for tenant in tenants:
        make_records(tenant, 10)
    with django_assert_max_num_queries(len(few.captured_queries)):
        large = staff_client.get("/admin/audits/auditrecord/?q=thing&source__exact=app")

    assert small.status_code == 200 and b"Acme 1" in small.content
    assert large.status_code == 200 and b"thing.happened" in large.content


def test_admin_is_read_only_even_for_superusers(staff_client, tenant):
    record = audit_record(tenant=tenant, action="conversation.created")

    change = staff_client.get(f"/admin/audits/auditrecord/{record.id}/change/")
    post = staff_client.post(f"/admin/audits/auditrecord/{record.id}/change/", {"action": "x.y"})
    add = staff_client.get("/admin/audits/auditrecord/add/")
    delete = staff_client.post(f"/admin/audits/auditrecord/{record.id}/delete/", {"post": "yes"})
    bulk = staff_client.post(
        "/admin/audits/auditrecord/", {"action": "delete_selected", "_selected_action": [record.id], "post": "yes"}
    )
    chain = staff_client.get("/admin/audits/auditchain/")

    assert change.status_code == 200 and b"conversation.created" in change.content
    assert b'name="_save"' not in change.content
    assert post.status_code == 403
    assert add.status_code == 403 and delete.status_code == 403
    assert bulk.status_code in (200, 302)
    assert AuditRecord.objects.filter(pk=record.pk, action="conversation.created").exists()
    assert chain.status_code == 200
    audit_seal_chains()
    assert "ok" in verify()
