"""Every read of audits with rules: who sees which records, and chain verification."""

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Count, Min, QuerySet
from django.utils import timezone

from .hashing import GENESIS_HASH
from .models import AuditChain, AuditRecord, chain_key


def audit_record_list(*, tenant, user, filters: dict | None = None) -> QuerySet[AuditRecord]:
    """The records ``user`` may see: owners and admins the tenant's whole trail, members
    only their own (actor = themselves). Another tenant's records never appear. ``user`` is
    the scope and is required: None is refused, not read as "the whole trail"."""
    if user is None:
        raise TypeError("audit_record_list needs the user who reads the trail")
    records = AuditRecord.objects.for_tenant(tenant)
    if not user.is_tenant_admin:
        records = records.filter(actor_id=user.pk)
    return audit_record_filter(records, filters or {})


def audit_record_filter(records: QuerySet[AuditRecord], filters: dict) -> QuerySet[AuditRecord]:
    """Validated filters (see ``AuditRecordFilterSerializer``). ``action`` ending in ``.*``
    matches the namespace (``auth.*``); ``since`` is inclusive, ``until`` exclusive."""
    action = filters.get("action")
    if action:
        if action.endswith(".*"):
            records = records.filter(action__startswith=action[:-1])
        else:
            records = records.filter(action=action)
    if filters.get("actor") is not None:
        records = records.filter(actor_id=filters["actor"])
    for field in ("resource_type", "resource_id", "source"):
        if filters.get(field):
            records = records.filter(**{field: filters[field]})
    if filters.get("since"):
        records = records.filter(created_at__gte=filters["since"])
    if filters.get("until"):
        records = records.filter(created_at__lt=filters["until"])
    return records


def audit_record_page_statement(*, tenant, user, filters: dict, keyset, columns: tuple[str, ...]) -> tuple[str, list]:
    """One page of ``audit_record_list(tenant=, user=)`` filtered by ``audit_record_filter``
    and read by ``keyset`` (``config.api.pagination.Keyset``), as PostgreSQL SQL with
    ``%s`` parameters selecting ``columns`` (field names or attnames, as ``.values()``
    takes them), for a caller that runs it itself (the list served from the event loop,
    ``config.api.asyncdb``). The same rows in the same order as the ORM path: the same
    scope, the same filters with the same truthiness, the keyset's order, position,
    offset and limit (tests compare the two on every filter and cursor). Built from fixed
    fragments and column names: only parameters carry what the client sent."""
    if user is None:
        raise TypeError("audit_record_page_statement needs the user who reads the trail")
    tenant_id = getattr(tenant, "pk", tenant)
    meta = AuditRecord._meta
    ops = _operations()
    column = _quoted_column

    where, params = [f"{column('tenant_id')} = %s"], [tenant_id]
    if not user.is_tenant_admin:
        where.append(f"{column('actor_id')} = %s")
        params.append(user.pk)
    action = filters.get("action")
    if action:
        if action.endswith(".*"):
            # Django's startswith on PostgreSQL: LIKE with the prefix's wildcards escaped.
            where.append(f"{column('action')}::text LIKE %s")
            params.append(f"{ops.prep_for_like_query(action[:-1])}%")
        else:
            where.append(f"{column('action')} = %s")
            params.append(action)
    if filters.get("actor") is not None:
        where.append(f"{column('actor_id')} = %s")
        params.append(filters["actor"])
    for field in ("resource_type", "resource_id", "source"):
        if filters.get(field):
            where.append(f"{column(field)} = %s")
            params.append(filters[field])
    if filters.get("since"):
        where.append(f"{column('created_at')} >= %s")
        params.append(filters["since"])
    if filters.get("until"):
        where.append(f"{column('created_at')} < %s")
        params.append(filters["until"])
    if keyset.position is not None:
        field = meta.get_field(keyset.position_field)
        where.append(f"{column(field.name)} {'<' if keyset.position_lookup == 'lt' else '>'} %s")
        params.append(field.get_prep_value(keyset.position))
    order = ", ".join(
        f"{column(name.lstrip('-'))} {'DESC' if name.startswith('-') else 'ASC'}" for name in keyset.ordering
    )
    sql = (
        f"SELECT {', '.join(column(name) for name in columns)} FROM {ops.quote_name(meta.db_table)} "
        f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT {int(keyset.limit)}"
    )
    if keyset.offset:
        sql += f" OFFSET {int(keyset.offset)}"
    return sql, params


@functools.cache
def _operations():
    """The default database's operations (quoting, LIKE escaping), taken once: in the event
    loop ``connection`` would build a DatabaseWrapper for every request's context."""
    return connection.ops


@functools.cache
def _quoted_column(name: str) -> str:
    return _operations().quote_name(AuditRecord._meta.get_field(name).column)


def audit_export_batches(records: QuerySet[AuditRecord], *, batch_size: int = 1000) -> Iterator[list[AuditRecord]]:
    """One tenant's records in chain order (oldest first), in keyset batches on
    ``chain_seq`` (the unique index): memory stays at one batch whatever the size of the
    trail, and no server-side cursor is held between batches, so the async export can
    fetch each batch on a worker thread. Then the records not sealed yet (``chain_seq``
    None), by id. A record sealed between the two phases is in the first one or the second,
    never both: the second phase only reads rows still unsealed, with ids above the first
    unsealed one seen. Precondition: ``records`` are of one tenant."""
    last_seq = 0
    while True:
        batch = list(records.filter(chain_seq__gt=last_seq).order_by("chain_seq")[:batch_size])
        if batch:
            yield batch
        if len(batch) < batch_size:
            break
        last_seq = batch[-1].chain_seq
    last_id = 0
    while True:
        batch = list(records.filter(chain_seq__isnull=True, pk__gt=last_id).order_by("pk")[:batch_size])
        if batch:
            yield batch
        if len(batch) < batch_size:
            return
        last_id = batch[-1].pk


@dataclass(frozen=True)
class ChainBreak:
    """One broken link: where (``seq``, the record there if any) and why."""

    seq: int
    record_id: int | None
    reason: str


# A chain rewritten wholesale breaks at every record; list this many, count the rest.
MAX_LISTED_BREAKS = 1000


@dataclass(frozen=True)
class ChainReport:
    chain: str
    checked: int
    head_seq: int
    head_hash: str
    breaks: tuple[ChainBreak, ...] = ()
    # Breaks found beyond MAX_LISTED_BREAKS (not listed).
    unlisted_breaks: int = 0
    # The backlog: committed records the sealer has not chained yet (not verified: they
    # carry no hash), and the creation time of the oldest of them.
    unsealed: int = 0
    oldest_unsealed_at: datetime | None = None

    @property
    def oldest_unsealed_age(self) -> float | None:
        """Seconds since the oldest unsealed record was created, or None without backlog."""
        if self.oldest_unsealed_at is None:
            return None
        return max(0.0, (timezone.now() - self.oldest_unsealed_at).total_seconds())

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def broken_count(self) -> int:
        return len(self.breaks) + self.unlisted_breaks

    # The first break, for callers that only show one.
    @property
    def broken_seq(self) -> int | None:
        return self.breaks[0].seq if self.breaks else None

    @property
    def broken_record_id(self) -> int | None:
        return self.breaks[0].record_id if self.breaks else None

    @property
    def reason(self) -> str:
        return self.breaks[0].reason if self.breaks else ""


def audit_chains_all() -> QuerySet[AuditChain]:
    """Every chain: each tenant's and the platform's (operators' verification)."""
    return AuditChain.objects.select_related("tenant").order_by("id")


def audit_chains(*, tenant) -> QuerySet[AuditChain]:
    """The chain of one tenant (a ``Tenant`` or its id)."""
    return audit_chains_all().filter(key=chain_key(getattr(tenant, "pk", tenant)))


def audit_orphan_tenant_ids() -> list[int | None]:
    """Tenants (None: the platform) that have sealed records but no chain head: the head
    was deleted. (A tenant whose records are all still unsealed has no head yet: the first
    seal creates it. That is backlog, see ``audit_unchained_backlog``.)"""
    keys = set(AuditChain.objects.values_list("key", flat=True))
    sealed = AuditRecord.objects.filter(chain_seq__isnull=False).order_by()
    tenant_ids = sealed.values_list("tenant_id", flat=True).distinct()
    return [tenant_id for tenant_id in tenant_ids if chain_key(tenant_id) not in keys]


@dataclass(frozen=True)
class Backlog:
    chain: str
    unsealed: int
    oldest_unsealed_at: datetime | None


def audit_backlog(*, tenant_id: int | None) -> Backlog:
    """How many of a chain's records are committed but not sealed yet, and the oldest's
    creation time (the partial index audit_unsealed_idx: only the backlog is read)."""
    backlog = AuditRecord.objects.filter(tenant_id=tenant_id, chain_seq__isnull=True).aggregate(
        count=Count("id"), oldest=Min("created_at")
    )
    return Backlog(chain=chain_key(tenant_id), unsealed=backlog["count"], oldest_unsealed_at=backlog["oldest"])


def audit_unchained_backlog() -> list[Backlog]:
    """The backlog of chains that have no head yet (every record still unsealed)."""
    keys = set(AuditChain.objects.values_list("key", flat=True))
    unsealed = AuditRecord.objects.filter(chain_seq__isnull=True).order_by()
    tenant_ids = unsealed.values_list("tenant_id", flat=True).distinct()
    return [audit_backlog(tenant_id=tenant_id) for tenant_id in tenant_ids if chain_key(tenant_id) not in keys]


@contextmanager
def consistent_snapshot():
    """One snapshot for several reads: on PostgreSQL a REPEATABLE READ read-only
    transaction, so a chain head and its records are read as of one instant although the
    sealer keeps moving both (READ COMMITTED would see records sealed after the head was
    read and call them a tampered tail). SQLite transactions are snapshots already. Inside
    a transaction already, that transaction is the snapshot it gets."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def audit_chain_verify(*, chain: AuditChain, batch_size: int = 2000) -> ChainReport:
    """Walks the chain from its anchor in ``chain_seq`` order and reports **every** broken
    link (one false alarm must not hide a real edit): missing sequence numbers (deleted
    rows), a ``prev_hash`` that is not the previous record's hash (deleted, reordered or
    re-hashed rows), a stored hash that does not match the content (an edited row), a tail
    that is not the chain head (deleted newest rows), and an anchor that no
    ``audit.purged`` record names (rows deleted and the anchor moved by hand).

    After a break the walk goes on from what is stored: the next link is checked against
    the stored hash of the record before it, and a gap is one break (the record after it
    is not reported again for its ``prev_hash``).

    Only sealed records are verified (unsealed ones have no hash yet); the unsealed backlog
    is reported beside (count, oldest). Run it inside ``consistent_snapshot()`` when the
    sealer may be running (``audit_chain_verify_all`` does): the head and the records must
    be read as of one instant."""
    records = AuditRecord.objects.filter(tenant_id=chain.tenant_id, chain_seq__isnull=False).order_by("chain_seq")
    expected_seq, expected_prev = chain.anchor_seq + 1, chain.anchor_hash
    checked, last_purge = 0, None
    breaks: list[ChainBreak] = []
    unlisted = 0

    def broken(record, reason, seq=None):
        nonlocal unlisted
        if len(breaks) >= MAX_LISTED_BREAKS:
            unlisted += 1
            return
        breaks.append(
            ChainBreak(
                seq=seq if seq is not None else record.chain_seq,
                record_id=record.pk if record is not None else None,
                reason=reason,
            )
        )

    for below_anchor in records.filter(chain_seq__lte=chain.anchor_seq):
        broken(below_anchor, f"record below the anchor (seq {chain.anchor_seq}) is still present")
    for record in records.filter(chain_seq__gt=chain.anchor_seq).iterator(chunk_size=batch_size):
        if record.chain_seq != expected_seq:
            missing = (
                f"record seq {expected_seq} is missing"
                if record.chain_seq == expected_seq + 1
                else f"records seq {expected_seq} to {record.chain_seq - 1} are missing"
            )
            broken(record, f"{missing} (next present is {record.chain_seq})", seq=expected_seq)
        elif record.prev_hash != expected_prev:
            broken(record, "prev_hash does not match the previous record's hash")
        if record.compute_hash() != record.hash:
            broken(record, "content does not match its hash (record edited)")
        if record.action == "audit.purged":
            last_purge = record
        expected_seq, expected_prev = record.chain_seq + 1, record.hash
        checked += 1
    if expected_seq - 1 != chain.last_seq or expected_prev != chain.last_hash:
        broken(
            None,
            f"chain ends at seq {expected_seq - 1} but its head says {chain.last_seq} (newest records deleted)",
            seq=expected_seq,
        )
    if chain.anchor_seq or chain.anchor_hash != GENESIS_HASH:
        details = last_purge.details if last_purge is not None else {}
        if details.get("through_seq") != chain.anchor_seq or details.get("through_hash") != chain.anchor_hash:
            broken(
                last_purge,
                "the chain's anchor is not the one its latest audit.purged record names",
                seq=chain.anchor_seq,
            )
    backlog = audit_backlog(tenant_id=chain.tenant_id)
    return ChainReport(
        chain=chain.key,
        checked=checked,
        head_seq=chain.last_seq,
        head_hash=chain.last_hash,
        breaks=tuple(breaks),
        unlisted_breaks=unlisted,
        unsealed=backlog.unsealed,
        oldest_unsealed_at=backlog.oldest_unsealed_at,
    )


def audit_chain_verify_all(*, chains: QuerySet[AuditChain]) -> Iterator[ChainReport]:
    """One report per chain of ``chains`` (``audit_chains_all()`` or ``audit_chains(tenant=...)``),
    each chain read in one consistent snapshot (the sealer may run meanwhile)."""
    for chain_id in list(chains.values_list("id", flat=True)):
        with consistent_snapshot():
            chain = AuditChain.objects.select_related("tenant").get(pk=chain_id)
            report = audit_chain_verify(chain=chain)
        yield report
