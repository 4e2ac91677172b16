from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Tenant, TenantQuerySet

from .hashing import GENESIS_HASH, HASH_VERSION, content_hash

PLATFORM_CHAIN_KEY = "platform"


def chain_key(tenant_id: int | None) -> str:
    return f"tenant:{tenant_id}" if tenant_id is not None else PLATFORM_CHAIN_KEY


class AuditChain(models.Model):
    """The head of one hash chain: one per tenant, plus the platform chain (tenant NULL) for
    events that belong to no tenant (a failed login for an unknown email).

    Only the sealer (``audits.services.audit_seal_chain``) touches this row: it locks it,
    gives the chain's unsealed records the next sequence numbers and hashes, and moves
    ``last_seq``/``last_hash`` to the newest sealed record. Requests never lock it (they only
    INSERT their record), so writers of one tenant do not queue behind each other; the row
    lock serializes sealers (and purges) of one chain. ``anchor_*`` is where the kept chain starts: the genesis
    hash, or after a purge the hash of the last purged record (an ``audit.purged`` record
    in the chain names the same anchor, so the anchor cannot be moved unnoticed).
    """

    key = models.CharField(max_length=40, unique=True)
    # Tenants are deactivated, not deleted: their audit trail outlives them (PROTECT).
    tenant = models.OneToOneField(Tenant, on_delete=models.PROTECT, null=True, blank=True, related_name="audit_chain")
    last_seq = models.PositiveBigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    anchor_seq = models.PositiveBigIntegerField(default=0)
    anchor_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class AuditRecordQuerySet(TenantQuerySet):
    pass


class AuditRecord(models.Model):
    """One audited event. Append-only: the application never updates a record's content or
    deletes it (only ``purge_audits`` deletes the oldest ones, keeping the chain verifiable).

    A record is inserted **unsealed** (``chain_seq``, ``prev_hash``, ``hash``, ``sealed_at``
    NULL) in the transaction of the action it records; the sealer fills those four fields
    once, soon after the commit (docs/audits.md). ``hash`` is sha256 over the canonical
    content (every field below but ``id``, ``hash`` and ``sealed_at``, including
    ``chain_seq`` and ``prev_hash``), so editing, deleting or reordering sealed rows behind
    the application's back breaks the chain at that point.
    """

    class Source(models.TextChoices):
        APP = "app", "Recorded by the application"
        API = "api", "Custom event posted by an API client"

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    # The actor's id stays even if the user is deleted (no FK constraint, nothing cascades):
    # the hash covers it. actor_label keeps who it was (their email at the time).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_label = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=100)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.APP)
    resource_type = models.CharField(max_length=50, blank=True)
    resource_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    # Text, not inet: the database must hand back exactly what was hashed.
    ip = models.CharField(max_length=45, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Set by the sealer, all together, in the chain's order; NULL until then (NULL, not "":
    # "not sealed yet" is no hash at all, and the API shows null).
    chain_seq = models.PositiveBigIntegerField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    # When the sealer chained the record (not hashed: it measures the sealing delay).
    sealed_at = models.DateTimeField(null=True, blank=True)
    # The canonical form ``hash`` was computed with (audits/hashing.py); records keep the
    # version they were sealed with. It is part of the hashed content, so changing it
    # breaks the record like any other edit.
    hash_version = models.PositiveSmallIntegerField(default=HASH_VERSION)

    objects = AuditRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "chain_seq"], condition=Q(tenant__isnull=False), name="audit_tenant_chain_seq_uniq"
            ),
            # NULLs are distinct in a unique index: the platform chain needs its own.
            models.UniqueConstraint(
                fields=["chain_seq"], condition=Q(tenant__isnull=True), name="audit_platform_chain_seq_uniq"
            ),
        ]
        indexes = [
            # Newest-first keyset pages of one tenant, of one actor, of one action.
            models.Index(fields=["tenant", "created_at", "id"], name="audit_tenant_created_idx"),
            models.Index(fields=["tenant", "actor", "created_at", "id"], name="audit_tenant_actor_idx"),
            models.Index(fields=["tenant", "action", "created_at"], name="audit_tenant_action_idx"),
            models.Index(fields=["tenant", "resource_type", "resource_id"], name="audit_tenant_resource_idx"),
            models.Index(fields=["created_at"], name="audit_created_idx"),
            # The sealer's work queue: the unsealed records of a chain, oldest id first. Tiny
            # (only the backlog is in it), so finding the work costs nothing at any trail size.
            models.Index(fields=["tenant", "id"], condition=Q(chain_seq__isnull=True), name="audit_unsealed_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} #{self.chain_seq}" if self.sealed else f"{self.action} (unsealed)"

    @property
    def sealed(self) -> bool:
        return self.chain_seq is not None

    def compute_hash(self) -> str:
        return content_hash(
            chain_seq=self.chain_seq,
            tenant_id=self.tenant_id,
            actor_id=self.actor_id,
            actor_label=self.actor_label,
            action=self.action,
            source=self.source,
            resource_type=self.resource_type,
            resource_id=self.resource_id,
            details=self.details,
            request_id=self.request_id,
            ip=self.ip,
            user_agent=self.user_agent,
            created_at=self.created_at,
            prev_hash=self.prev_hash,
            version=self.hash_version,
        )
