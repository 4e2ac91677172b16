from audits.services import audit_record


def make_records(tenant, count: int, *, actor=None, action: str = "thing.happened", **kwargs):
    """Real records through the service (a factory would bypass the chain)."""
    return [
        audit_record(tenant=tenant, actor=actor, action=action, resource_type="thing", resource_id=n, **kwargs)
        for n in range(count)
    ]
