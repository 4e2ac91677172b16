"""Every write in audits: recording an event (one INSERT, unsealed), sealing the chains in
order off the request path, custom events from API clients, and retention (purge with a
verifiable checkpoint).

Other apps record their actions with ``audit_record`` from inside their own services, in
the transaction of the action, so the record commits or rolls back with it.
"""

import ipaddress
import re
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config import statements
from config.core.context import client_ip_var, request_id_var, user_agent_var
from config.core.errors import ApplicationError

from . import sealing
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


def _append(
    *,
    tenant,
    action: str,
    actor,
    resource_type: str,
    resource_id,
    details: dict | None,
    source: str,
    writes: statements.Writes | None = None,
) -> AuditRecord:
    """One INSERT of an unsealed record, and a seal scheduled for after the commit. No
    chain row is read or locked, no savepoint taken: one INSERT needs no partial rollback.

    ``writes``: the INSERT is a step of those writes in one statement
    (``config.statements``), made when the caller executes them; ``resource_id`` and
    values of ``details`` may then be ``Ref``s to what earlier steps return (a message's
    id and seq). The record's id, and those values, are filled in once they ran."""
    refs = {key: value for key, value in (details or {}).items() if isinstance(value, statements.Ref)}
    plain = {key: value for key, value in (details or {}).items() if key not in refs}
    record = AuditRecord(
        tenant_id=_pk(tenant),
        actor_id=_pk(actor),
        actor_label=(getattr(actor, "email", "") or "")[:254] if actor is not None else "",
        action=action,
        source=source,
        resource_type=resource_type or "",
        resource_id=resource_id
        if isinstance(resource_id, statements.Ref)
        else str(resource_id if resource_id is not None else "")[:64],
        details=normalize_details(plain),
        request_id=(request_id_var.get() or "")[:128],
        ip=_client_ip(),
        user_agent=(user_agent_var.get() or "")[:512],
        created_at=timezone.now(),
        hash_version=HASH_VERSION,
    )
    if writes is None:
        if refs or isinstance(resource_id, statements.Ref):
            raise ValueError("audit values from a statement's earlier steps need that statement (writes)")
        record.save(force_insert=True)
        sealing.seal_after_commit()
        return record
    known = record.details
    if refs:
        # The stored details: the known part, and each ref's value (numbers or text as the
        # database returns them: the sealer hashes what it reads back).
        pairs = ", ".join(f"CAST(%s AS text), {ref.sql}" for ref in refs.values())
        field = AuditRecord._meta.get_field("details")
        record.details = statements.Expr(
            f"CAST(%s AS jsonb) || jsonb_build_object({pairs})",
            (field.get_db_prep_save(known, connection=connection), *refs),
            tuple(refs.values()),
        )
    step = writes.insert(record)

    def inserted() -> None:
        record.pk = step.row[0]
        record._state.adding, record._state.db = False, connection.alias
        if isinstance(record.resource_id, statements.Ref):
            record.resource_id = str(record.resource_id.value)
        record.details = {**known, **{key: ref.value for key, ref in refs.items()}}
        sealing.seal_after_commit()

    writes.on_done(inserted)
    return record


def audit_record(
    *,
    tenant,
    action: str,
    actor=None,
    resource_type: str = "",
    resource_id="",
    details: dict | None = None,
    writes: statements.Writes | None = None,
) -> AuditRecord:
    """Appends one record to the tenant's hash chain (``tenant=None``: the platform chain).

    Call it from a service, inside the transaction of the action it records: the record
    commits or rolls back with that action (outside a transaction it commits at once).
    Request id, client IP and user agent come from the request context. ``actor=None``
    means the system. ``action`` is a dotted name such as ``conversation.created``;
    ``details`` must be JSON-serializable (dates, UUIDs and decimals become strings).

    The record is returned **unsealed** (``chain_seq``/``prev_hash``/``hash`` None): it is
    one INSERT and takes no lock shared with other writers. The sealer chains it soon after
    the commit (``audit_seal_chains``; docs/audits.md).

    ``writes``: recorded as a step of those writes in one statement
    (``config.statements``), with the caller's other writes in one round trip.
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
        writes=writes,
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


def audit_seal_chains(*, tenant=None, batch_size: int | None = None) -> int:
    """Seals the committed backlog of every chain (or of ``tenant``'s chain only; ``None``
    there means every chain, not the platform chain). Returns how many records it sealed.

    Safe to run anywhere, any number of times, concurrently: sealers of one chain queue on
    its row lock, and each seals what is still unsealed once it holds it."""
    if tenant is not None:
        tenant_ids = [_pk(tenant)]
    else:
        # The partial index audit_unsealed_idx holds only the backlog: this is cheap.
        unsealed = AuditRecord.objects.filter(chain_seq__isnull=True).order_by()
        tenant_ids = list(unsealed.values_list("tenant_id", flat=True).distinct())
    return sum(audit_seal_chain(tenant=tenant_id, batch_size=batch_size) for tenant_id in tenant_ids)


def audit_seal_chain(*, tenant, batch_size: int | None = None) -> int:
    """Seals one chain's committed backlog (``tenant=None``: the platform chain), one
    transaction per batch, so the chain row is never locked for long."""
    size = batch_size or settings.AUDIT_SEAL_BATCH_SIZE
    total = 0
    while True:
        with transaction.atomic():
            chain = _lock_chain(tenant_id=_pk(tenant))
            sealed = _seal_locked(chain=chain, limit=size)
        total += sealed
        if sealed < size:
            return total


def _lock_chain(*, tenant_id: int | None) -> AuditChain:
    """The chain head, created on first use, locked until the transaction ends: one sealer
    (or purge) per chain at a time. Only sealers and purges lock it, never a request."""
    key = chain_key(tenant_id)
    chain = AuditChain.objects.select_for_update().filter(key=key).first()
    if chain is None:
        try:
            with transaction.atomic():
                AuditChain.objects.create(key=key, tenant_id=tenant_id)
        except IntegrityError:
            pass  # a concurrent sealer created it first; its row is there now
        chain = AuditChain.objects.select_for_update().get(key=key)
    return chain


def _seal_locked(*, chain: AuditChain, limit: int) -> int:
    """Gives up to ``limit`` unsealed records of ``chain`` the next sequence numbers, their
    ``prev_hash`` and ``hash``, and moves the head. Precondition: ``chain`` is locked by this
    transaction (``_lock_chain``).

    The order is the order in which committed records become visible to the sealer, by id
    within one pass. A record whose transaction is still open is invisible: it is not a gap
    (sequence numbers are given here, not at insert), and it is sealed by a later pass after
    the records sealed before it commits. Sealed records are never touched again, so the
    chain only grows at its head. The hash covers the content as the database returns it."""
    records = list(AuditRecord.objects.filter(tenant_id=chain.tenant_id, chain_seq__isnull=True).order_by("id")[:limit])
    if not records:
        return 0
    seq, prev_hash = chain.last_seq, chain.last_hash
    now = timezone.now()
    for record in records:
        seq += 1
        record.chain_seq, record.prev_hash, record.sealed_at = seq, prev_hash, now
        record.hash = record.compute_hash()
        prev_hash = record.hash
    updated = _write_seals(records)
    if updated != len(records):
        raise RuntimeError(f"audit chain {chain.key}: {len(records) - updated} record(s) sealed by someone else")
    AuditChain.objects.filter(pk=chain.pk).update(last_seq=seq, last_hash=prev_hash)
    chain.last_seq, chain.last_hash = seq, prev_hash
    return len(records)


def _write_seals(records: list[AuditRecord]) -> int:
    """Stores the seals of ``records`` in one statement, only on rows still unsealed (a
    sealed record is never re-sealed, whatever happens); returns the rows updated.
    PostgreSQL: ``UPDATE ... FROM (VALUES ...)``, linear in the batch (Django's
    ``bulk_update`` builds a CASE per column, which PostgreSQL evaluates in O(batch²): 4 ms
    per record at 500). Elsewhere (SQLite, the embedded default): ``bulk_update``."""
    if connection.vendor != "postgresql":
        return AuditRecord.objects.filter(chain_seq__isnull=True).bulk_update(
            records, ["chain_seq", "prev_hash", "hash", "sealed_at"]
        )
    qn = connection.ops.quote_name
    rows = ", ".join(["(%s::bigint, %s::bigint, %s, %s)"] * len(records))
    params = [value for r in records for value in (r.pk, r.chain_seq, r.prev_hash, r.hash)]
    sql = (
        f"UPDATE {qn(AuditRecord._meta.db_table)} AS r SET chain_seq = v.seq, prev_hash = v.prev, hash = v.hash,"
        f" sealed_at = %s FROM (VALUES {rows}) AS v(id, seq, prev, hash)"
        " WHERE r.id = v.id AND r.chain_seq IS NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [records[0].sealed_at, *params])
        return cursor.rowcount


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
    the chain. Holds each chain's lock (the sealer's) while its rows are deleted: the chain's
    committed backlog is sealed first (only sealed records are purged), and the
    ``audit.purged`` record is sealed before the lock is released, so the anchor and the
    record naming it appear together.
    """
    cutoff = timezone.now() - older_than
    audit_seal_chains(tenant=tenant)  # a chain with no head yet gets one (and its backlog chained)
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
    while _seal_locked(chain=chain, limit=settings.AUDIT_SEAL_BATCH_SIZE) == settings.AUDIT_SEAL_BATCH_SIZE:
        pass
    records = AuditRecord.objects.filter(tenant_id=chain.tenant_id, chain_seq__isnull=False)
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
    while _seal_locked(chain=chain, limit=settings.AUDIT_SEAL_BATCH_SIZE) == settings.AUDIT_SEAL_BATCH_SIZE:
        pass
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
