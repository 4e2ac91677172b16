"""Every write in audits: appending a record to its tenant's hash chain, custom events from
API clients, and retention (purge with a verifiable checkpoint).

Other apps record their actions with ``audit_record`` from inside their own services, in
the transaction of the action, so the record commits or rolls back with it.
"""

import ipaddress
import re
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config.core.context import client_ip_var, request_id_var, user_agent_var
from config.core.errors import ApplicationError

from .hashing import HASH_VERSION, normalize_details
from .models import AuditChain, AuditRecord, chain_key

CUSTOM_ACTION_PREFIX = "custom."
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
_CUSTOM_ACTION_RE = re.compile(r"^custom(\.[a-z0-9_]+)+$")


def _pk(value):
    return getattr(value, "pk", value)


def _client_ip() -> str:
    raw = client_ip_var.get() or ""
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        return ""  # a unix socket path, or nothing: not an address worth keeping


def _advance_chain(*, tenant_id: int | None) -> tuple[int, str]:
    """Takes the next sequence number of the tenant's chain and returns it with the chain's
    current last hash. The UPDATE locks the chain row until the caller's transaction ends,
    which serializes writers of one chain (and only of that chain). Writing first, before
    any read, also makes SQLite take its write lock up front instead of failing to upgrade.
    Precondition: inside a transaction."""
    key = chain_key(tenant_id)
    qn = connection.ops.quote_name
    sql = (
        f"UPDATE {qn(AuditChain._meta.db_table)} SET {qn('last_seq')} = {qn('last_seq')} + 1"
        f" WHERE {qn('key')} = %s RETURNING {qn('last_seq')}, {qn('last_hash')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [key])
        row = cursor.fetchone()
        if row is None:
            try:
                with transaction.atomic():
                    AuditChain.objects.create(key=key, tenant_id=tenant_id)
            except IntegrityError:
                pass  # a concurrent writer created it first; its row is there now
            cursor.execute(sql, [key])
            row = cursor.fetchone()
    return int(row[0]), row[1]


def _append(
    *,
    tenant,
    action: str,
    actor,
    resource_type: str,
    resource_id,
    details: dict | None,
    source: str,
) -> AuditRecord:
    tenant_id = _pk(tenant)
    with transaction.atomic():
        seq, prev_hash = _advance_chain(tenant_id=tenant_id)
        record = AuditRecord(
            tenant_id=tenant_id,
            actor_id=_pk(actor),
            actor_label=(getattr(actor, "email", "") or "")[:254] if actor is not None else "",
            action=action,
            source=source,
            resource_type=resource_type or "",
            resource_id=str(resource_id if resource_id is not None else "")[:64],
            details=normalize_details(details),
            request_id=(request_id_var.get() or "")[:128],
            ip=_client_ip(),
            user_agent=(user_agent_var.get() or "")[:512],
            # Taken under the chain lock, so a chain's timestamps follow its sequence.
            created_at=timezone.now(),
            chain_seq=seq,
            prev_hash=prev_hash,
            hash_version=HASH_VERSION,
        )
        record.hash = record.compute_hash()
        record.save(force_insert=True)
        AuditChain.objects.filter(key=chain_key(tenant_id)).update(last_hash=record.hash)
    return record


def audit_record(
    *,
    tenant,
    action: str,
    actor=None,
    resource_type: str = "",
    resource_id="",
    details: dict | None = None,
) -> AuditRecord:
    """Appends one record to the tenant's hash chain (``tenant=None``: the platform chain).

    Call it from a service, inside the transaction of the action it records: the record
    commits or rolls back with that action. It opens its own (nested) transaction, so it
    also works on its own. Request id, client IP and user agent come from the request
    context. ``actor=None`` means the system. ``action`` is a dotted name such as
    ``conversation.created``; ``details`` must be JSON-serializable (dates, UUIDs and
    decimals become strings). Holds the chain's row lock until the outer transaction ends.
    """
    if not _ACTION_RE.match(action) or len(action) > 100:
        raise ValueError(f"audit action must be a dotted lower-case name, got {action!r}")
    return _append(
        tenant=tenant,
        action=action,
        actor=actor,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details,
        source=AuditRecord.Source.APP,
    )


def audit_custom_record(
    *, actor, action: str, resource_type: str = "", resource_id: str = "", details: dict | None = None
) -> AuditRecord:
    """A custom event posted by an API client, in the actor's tenant. Its action must be in
    the ``custom.`` namespace and the record is marked ``source=api``, so a client can never
    forge an event the application records itself."""
    if not _CUSTOM_ACTION_RE.match(action) or len(action) > 100:
        raise ApplicationError(
            "Custom audit actions are dotted lower-case names under 'custom.', e.g. 'custom.report.viewed'.",
            code="validation_error",
            details={"action": ["Must match custom.<name>[.<name>...] (a-z, 0-9, _)."]},
        )
    return _append(
        tenant=actor.tenant_id,
        action=action,
        actor=actor,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details,
        source=AuditRecord.Source.API,
    )


@dataclass(frozen=True)
class PurgeResult:
    chain: str
    deleted: int
    anchor_seq: int


def audit_purge(*, older_than: timedelta, tenant=None) -> list[PurgeResult]:
    """Deletes, chain by chain, the oldest records created before now - ``older_than``.

    Only a prefix of each chain goes (records up to the first one that is recent enough),
    so what stays is still one unbroken chain. In the same transaction the chain's anchor
    moves to the last deleted record (its seq and hash; the first kept record's
    ``prev_hash`` already names it) and an ``audit.purged`` record is appended that names
    the same anchor: verification starts from it, and nobody can move it without breaking
    the chain. Holds each chain's lock while its rows are deleted.
    """
    cutoff = timezone.now() - older_than
    chains = AuditChain.objects.all()
    if tenant is not None:
        chains = chains.filter(tenant_id=_pk(tenant))
    results = []
    for chain_id in chains.values_list("id", flat=True):
        result = _purge_chain(chain_id=chain_id, cutoff=cutoff, older_than=older_than)
        if result is not None:
            results.append(result)
    return results


@transaction.atomic
def _purge_chain(*, chain_id: int, cutoff, older_than: timedelta) -> PurgeResult | None:
    chain = AuditChain.objects.select_for_update().get(pk=chain_id)
    records = AuditRecord.objects.filter(tenant_id=chain.tenant_id)
    first_recent = (
        records.filter(created_at__gte=cutoff, chain_seq__gt=chain.anchor_seq)
        .order_by("chain_seq")
        .values_list("chain_seq", flat=True)
        .first()
    )
    through_seq = (first_recent - 1) if first_recent is not None else chain.last_seq
    if through_seq <= chain.anchor_seq:
        return None
    through_hash = records.get(chain_seq=through_seq).hash
    deleted, _ = records.filter(chain_seq__lte=through_seq).delete()
    AuditChain.objects.filter(pk=chain.pk).update(anchor_seq=through_seq, anchor_hash=through_hash)
    audit_record(
        tenant=chain.tenant_id,
        action="audit.purged",
        resource_type="audit_chain",
        resource_id=chain.key,
        details={
            "through_seq": through_seq,
            "through_hash": through_hash,
            "deleted": deleted,
            "older_than_days": older_than.days,
            "cutoff": cutoff,
        },
    )
    return PurgeResult(chain=chain.key, deleted=deleted, anchor_seq=through_seq)


def audit_export_record(*, actor, export_format: str, filters: dict) -> AuditRecord:
    """Records that ``actor`` exported the trail (committed before the export streams)."""
    return audit_record(
        tenant=actor.tenant_id,
        actor=actor,
        action="audit.exported",
        resource_type="audit",
        details={"format": export_format, "filters": filters},
    )
