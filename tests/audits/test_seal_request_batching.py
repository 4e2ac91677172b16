"""On the real stack a commit asks for its seal from the background batcher: the request
does not wait for it, and many commits share one ask (the sealer seals every committed
record it finds)."""

import pytest
from django.db import transaction

from audits import sealing
from audits.models import AuditRecord
from audits.services import audit_record
from config.core import background

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def asks():
    saved = (sealing._requester, sealing._in_background)
    calls: list[int] = []
    sealing.seal_requester_set(lambda: calls.append(AuditRecord.objects.count()), in_background=lambda: True)
    yield calls
    background.flush_all()
    sealing._requester, sealing._in_background = saved


def test_committed_records_are_asked_for_after_commit_in_the_background(tenant, asks):
    for n in range(3):
        with transaction.atomic():
            audit_record(tenant=tenant, action="test.recorded", resource_type="test", resource_id=n)

    background.flush_all()

    assert 1 <= len(asks) <= 3  # at most one ask per commit, fewer when they shared a batch
    assert asks[-1] == 3  # the last ask came after every record was committed


def test_a_rolled_back_record_asks_for_nothing(tenant, asks):
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(tenant=tenant, action="test.recorded", resource_type="test")
        raise RuntimeError("rolled back")

    background.flush_all()

    assert asks == []
