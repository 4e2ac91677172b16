"""The hash chain's arithmetic: one canonical form of a record's content, hashed with sha256.

Changing anything here changes every hash: bump ``HASH_VERSION`` and keep the old form
readable if it ever must change.
"""

import hashlib
import json
from datetime import UTC, datetime

from django.core.serializers.json import DjangoJSONEncoder

HASH_VERSION = 1
# prev_hash of a chain's first record (and the anchor of a chain nothing was purged from).
GENESIS_HASH = "0" * 64


def normalize_details(details: dict | None) -> dict:
    """The JSON the database will hand back: dates, UUIDs, decimals become strings now, so
    the hash computed before the insert equals the one recomputed after a read."""
    return json.loads(json.dumps(details or {}, cls=DjangoJSONEncoder))


def canonical_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_content(
    *,
    chain_seq: int,
    tenant_id: int | None,
    actor_id: int | None,
    actor_label: str,
    action: str,
    source: str,
    resource_type: str,
    resource_id: str,
    details: dict,
    request_id: str,
    ip: str,
    user_agent: str,
    created_at: datetime,
    prev_hash: str,
) -> bytes:
    content = {
        "v": HASH_VERSION,
        "chain_seq": chain_seq,
        "tenant_id": tenant_id,
        "actor_id": actor_id,
        "actor_label": actor_label,
        "action": action,
        "source": source,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "details": details,
        "request_id": request_id,
        "ip": ip,
        "user_agent": user_agent,
        "created_at": canonical_timestamp(created_at),
        "prev_hash": prev_hash,
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(**fields) -> str:
    return hashlib.sha256(canonical_content(**fields)).hexdigest()
