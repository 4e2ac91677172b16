from audits.models import AuditRecord
from audits.services import audit_record, audit_seal_chains


def make_records(tenant, count: int, *, actor=None, action: str = "thing.happened", seal: bool = True, **kwargs):
    """Real records through the service (a factory would bypass the chain), sealed by the
    real sealer unless ``seal=False`` (a test's transaction never commits, so the on-commit
    seal does not run)."""
    records = [
        audit_record(tenant=tenant, actor=actor, action=action, resource_type="thing", resource_id=n, **kwargs)
        for n in range(count)
    ]
    if seal:
        audit_seal_chains()
        sealed = AuditRecord.objects.in_bulk([record.pk for record in records])
        records = [sealed[record.pk] for record in records]
    return records
