import threading

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from audits.hashing import GENESIS_HASH
from audits.models import AuditChain, AuditRecord
from audits.selectors import audit_chain_verify
from audits.services import audit_custom_record, audit_record, audit_seal_chains
from config.core.context import client_ip_var, request_id_var, user_agent_var
from config.core.errors import ApplicationError
from tests.accounts.factories import TenantFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def request_context():
    tokens = [
        request_id_var.set("req-42"),
        client_ip_var.set("203.0.113.7"),
        user_agent_var.set("pytest-agent/1.0"),
    ]
    yield
    for var, token in zip((request_id_var, client_ip_var, user_agent_var), tokens, strict=True):
        var.reset(token)


def test_audit_record_stores_content_and_request_context(tenant, request_context):
    actor = UserFactory(tenant=tenant)

    record = audit_record(
        tenant=tenant,
        actor=actor,
        action="conversation.created",
        resource_type="conversation",
        resource_id=17,
        details={"title": "Hi", "when": __import__("datetime").date(2024, 5, 1)},
    )

    # Written unsealed: no chain position, no hash, until the sealer runs.
    assert (record.chain_seq, record.prev_hash, record.hash, record.sealed) == (None, None, None, False)
    assert audit_seal_chains() == 1
    record.refresh_from_db()
    assert (record.tenant_id, record.actor_id, record.actor_label) == (tenant.id, actor.id, actor.email)
    assert (record.action, record.source) == ("conversation.created", "app")
    assert (record.resource_type, record.resource_id) == ("conversation", "17")
    assert record.details == {"title": "Hi", "when": "2024-05-01"}
    assert (record.request_id, record.ip, record.user_agent) == ("req-42", "203.0.113.7", "pytest-agent/1.0")
    assert record.chain_seq == 1 and record.prev_hash == GENESIS_HASH
    assert record.hash == record.compute_hash() and len(record.hash) == 64
    assert record.sealed and record.sealed_at >= record.created_at


def test_records_chain_per_tenant_with_gapless_sequence(tenant):
    other = TenantFactory()

    first = audit_record(tenant=tenant, action="a.one")
    elsewhere = audit_record(tenant=other, action="a.one")
    second = audit_record(tenant=tenant, action="a.two")
    audit_seal_chains()
    for record in (first, elsewhere, second):
        record.refresh_from_db()

    assert (first.chain_seq, second.chain_seq, elsewhere.chain_seq) == (1, 2, 1)
    assert second.prev_hash == first.hash
    assert elsewhere.prev_hash == GENESIS_HASH
    chain = AuditChain.objects.get(tenant=tenant)
    assert (chain.last_seq, chain.last_hash) == (2, second.hash)
    assert audit_chain_verify(chain=chain).ok


def test_system_event_without_tenant_goes_to_the_platform_chain():
    first = audit_record(tenant=None, action="auth.login_failed", details={"email": "nobody@example.com"})
    second = audit_record(tenant=None, action="auth.login_failed")
    audit_seal_chains()
    first.refresh_from_db()
    second.refresh_from_db()

    assert (first.tenant_id, first.actor_id, first.actor_label) == (None, None, "")
    assert (first.chain_seq, second.chain_seq) == (1, 2)
    chain = AuditChain.objects.get(key="platform")
    assert chain.tenant_id is None and audit_chain_verify(chain=chain).ok


def test_platform_chain_seq_is_unique_despite_null_tenant():
    record = audit_record(tenant=None, action="auth.login_failed")
    audit_seal_chains()
    record.refresh_from_db()

    with pytest.raises(IntegrityError), transaction.atomic():
        AuditRecord.objects.create(
            tenant=None, action="x.y", chain_seq=record.chain_seq, prev_hash=GENESIS_HASH, hash="f" * 64
        )


def test_record_rolls_back_with_the_action_it_records(tenant):
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(tenant=tenant, action="conversation.created")
        raise RuntimeError("the action failed")

    assert not AuditRecord.objects.exists()
    after = audit_record(tenant=tenant, action="conversation.created")
    audit_seal_chains()
    after.refresh_from_db()
    assert after.chain_seq == 1  # a rolled-back record never took a number (given at sealing)


def test_recording_is_one_insert_and_touches_no_chain(tenant):
    audit_record(tenant=tenant, action="a.warm")
    audit_seal_chains()  # the chain head exists: recording still never reads or locks it

    with CaptureQueriesContext(connection) as queries:
        audit_record(tenant=tenant, action="a.cheap")

    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 1 and statements[0].startswith("INSERT"), statements
    assert AuditChain._meta.db_table not in statements[0]


def test_unusable_addresses_are_stored_empty(tenant):
    token = client_ip_var.set("/run/daphne.sock")
    try:
        record = audit_record(tenant=tenant, action="a.b")
    finally:
        client_ip_var.reset(token)

    assert record.ip == ""


def test_action_names_must_be_dotted(tenant):
    with pytest.raises(ValueError):
        audit_record(tenant=tenant, action="NotDotted")

    assert not AuditRecord.objects.exists()


def test_custom_record_is_marked_and_namespaced(user):
    record = audit_custom_record(actor=user, action="custom.report.viewed", details={"report": 3})

    assert (record.source, record.action, record.tenant_id, record.actor_id) == (
        "api",
        "custom.report.viewed",
        user.tenant_id,
        user.id,
    )
    with pytest.raises(ApplicationError):
        audit_custom_record(actor=user, action="auth.login")
    assert AuditRecord.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_one_tenant_keep_one_gapless_chain(real_stack):
    tenant = TenantFactory()
    writers, per_writer, errors = 8, 10, []
    barrier = threading.Barrier(writers)

    def write(n):
        try:
            barrier.wait()  # every writer races for the (not yet created) chain head
            for i in range(per_writer):
                audit_record(tenant=tenant, action="message.sent", resource_id=f"{n}-{i}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    # Each commit sealed in-process (Celery eager), racing the others for the chain head.
    assert not AuditRecord.objects.filter(tenant=tenant, chain_seq__isnull=True).exists()
    seqs = sorted(AuditRecord.objects.filter(tenant=tenant).values_list("chain_seq", flat=True))
    assert seqs == list(range(1, writers * per_writer + 1))
    assert audit_chain_verify(chain=AuditChain.objects.get(tenant=tenant)).ok
