"""Details whose JSON PostgreSQL spells differently (numbers, key order, unicode) must verify
clean after the round trip through jsonb: a false tamper alarm is as bad as a missed one."""

import math
import unicodedata

import pytest

from audits.hashing import HASH_VERSION
from audits.models import AuditChain, AuditRecord
from audits.selectors import audit_chain_verify
from audits.services import audit_record, audit_seal_chains
from tests.helpers import client_for

pytestmark = pytest.mark.django_db

# Each of these came back from jsonb spelled differently than it went in.
AWKWARD_DETAILS = [
    {"value": 1e16},
    {"value": 1.0, "other": 1},
    {"value": -0.0},
    {"value": 1.5e300},
    {"value": 1.5e-7},
    {"value": 123456789012345678.0},
    {"value": 2**70, "negative": -(2**70)},
    {"value": 0.1, "list": [1e16, 2.5, -0.0, {"nested": 1e20}]},
    {"zz": 1, "a": 2, "mm": {"b": 1, "aaa": 2}},  # jsonb orders keys shortest first
    {"nfd": unicodedata.normalize("NFD", "Café"), "nfc": "Café", "emoji": "👩‍💻"},
    {"value": True, "none": None, "zero": 0},
]


def reread_and_verify(tenant) -> None:
    audit_seal_chains(tenant=tenant)  # the real sealer hashes what the database returns
    chain = AuditChain.objects.get(tenant=tenant)
    report = audit_chain_verify(chain=chain)
    assert report.ok, report.breaks


@pytest.mark.parametrize("details", AWKWARD_DETAILS)
def test_service_records_with_awkward_details_verify_on_postgresql(real_stack, tenant, details):
    record = audit_record(tenant=tenant, action="thing.happened", details=details)
    audit_seal_chains(tenant=tenant)

    stored = AuditRecord.objects.get(pk=record.pk)
    assert stored.hash_version == HASH_VERSION
    assert stored.compute_hash() == stored.hash
    reread_and_verify(tenant)


def test_custom_events_with_awkward_details_verify_on_postgresql(real_stack, user):
    api = client_for(user)
    for details in AWKWARD_DETAILS:
        response = api.post("/api/v1/audits/", {"action": "custom.report.viewed", "details": details}, format="json")
        assert response.status_code == 201, response.content

    assert AuditRecord.objects.filter(tenant=user.tenant, action="custom.report.viewed").count() == len(AWKWARD_DETAILS)
    reread_and_verify(user.tenant)


def test_custom_event_body_parsed_from_raw_json_verifies(real_stack, user):
    # What a client really sends: exponent spellings that Python never writes itself.
    api = client_for(user)
    body = '{"action": "custom.x", "details": {"a": 1E16, "b": 1.000, "c": -0, "d": 10e-1, "e": 1e2}}'

    response = api.post("/api/v1/audits/", body, content_type="application/json")

    assert response.status_code == 201, response.content
    stored = AuditRecord.objects.get(pk=response.json()["id"])
    assert (stored.action, stored.tenant_id, stored.actor_id) == ("custom.x", user.tenant_id, user.pk)
    reread_and_verify(user.tenant)


@pytest.mark.parametrize(
    "raw",
    [
        '{"action": "custom.x", "details": {"a": 1e400}}',  # Infinity: not JSON, jsonb refuses
        '{"action": "custom.x", "details": {"a": NaN}}',
        '{"action": "custom.x", "details": {"a": "\\ud800"}}',  # lone surrogate: jsonb refuses
    ],
)
def test_custom_event_details_jsonb_cannot_store_are_refused(user, raw):
    response = client_for(user).post("/api/v1/audits/", raw, content_type="application/json")

    assert response.status_code == 400, response.content
    # NaN is refused by the JSON parser itself; the others by the serializer.
    assert response.json()["error"]["code"] in ("validation_error", "parse_error")
    assert not AuditRecord.objects.filter(action="custom.x").exists()


def test_number_spellings_are_one_canonical_form():
    from audits.hashing import canonical_number

    assert canonical_number(1e16) == canonical_number(10**16) == "10000000000000000"
    assert canonical_number(1.0) == canonical_number(1) == "1"
    assert canonical_number(-0.0) == canonical_number(0) == "0"
    assert canonical_number(1.5e-7) == "0.00000015"
    assert canonical_number(1.5e300) == "15" + "0" * 299
    with pytest.raises(ValueError):
        canonical_number(math.inf)


def test_version_1_records_keep_verifying(tenant):
    # Records written before version 2 carry hash_version 1 and the v1 canonical form.
    old = audit_record(tenant=tenant, action="thing.happened", details={"value": 3})
    audit_seal_chains(tenant=tenant)
    AuditRecord.objects.filter(pk=old.pk).update(hash_version=1)
    old.refresh_from_db()
    v1_hash = old.compute_hash()
    AuditRecord.objects.filter(pk=old.pk).update(hash=v1_hash)
    AuditChain.objects.filter(tenant=tenant).update(last_hash=v1_hash)
    audit_record(tenant=tenant, action="thing.happened", details={"value": 1e16})
    audit_seal_chains(tenant=tenant)

    report = audit_chain_verify(chain=AuditChain.objects.get(tenant=tenant))

    assert report.ok, report.breaks
    assert AuditRecord.objects.get(pk=old.pk).hash_version == 1
