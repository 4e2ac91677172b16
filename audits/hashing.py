"""The hash chain's arithmetic: one canonical form of a record's content, hashed with sha256.

Changing anything here changes every hash: add a new ``HASH_VERSION`` and keep every old
form computable, since each record stores the version it was sealed with
(``AuditRecord.hash_version``) and is verified with that version forever.

Versions:

- 1: ``json.dumps`` of the content (sorted keys, no spaces). Numbers in ``details`` are
  hashed as Python spells them, so a number PostgreSQL's jsonb spells differently
  (``1e16`` comes back as ``10000000000000000``, ``-0.0`` as ``0.0``, ``1.5e300`` as an
  integer) made a clean record look edited.
- 2: the same, but every number in ``details`` is written in one canonical decimal
  spelling that survives the jsonb round trip (and SQLite's): integral values as integers
  (``1.0``, ``1e16``, ``-0.0`` -> ``1``, ``10000000000000000``, ``0``), others as plain
  decimals without exponent or trailing zeros (``1.5e-07`` -> ``0.00000015``). A number
  stays a number (``1`` and ``"1"`` hash differently). Strings are hashed exactly as
  stored (jsonb keeps code points: no unicode normalisation, which would let an NFC/NFD
  edit go unnoticed); key order never matters (sorted).
"""

import hashlib
import json
import math
from datetime import UTC, datetime
from decimal import Decimal

from django.core.serializers.json import DjangoJSONEncoder

from config.api.parsers import InvalidJSON, check_value

HASH_VERSION = 2
HASH_VERSIONS = (1, 2)
# prev_hash of a chain's first record (and the anchor of a chain nothing was purged from).
GENESIS_HASH = "0" * 64


def details_problem(details) -> str | None:
    """Why ``details`` (parsed JSON) cannot be stored and hashed as it is, or None: the
    API's strict-JSON rules (``config.api.parsers.check_value``): a number that is not
    finite (jsonb refuses them; ``1e400`` parses to infinity), a NUL character or an
    unpaired surrogate in a string or key (jsonb refuses both), or nesting past the bound
    every JSON body has."""
    try:
        check_value(details)
    except InvalidJSON as exc:
        return str(exc.detail).removeprefix("Invalid JSON: ").rstrip(".")
    return None


def normalize_details(details: dict | None) -> dict:
    """The JSON the database will hand back: dates, UUIDs, decimals become strings now, so
    the hash computed before the insert equals the one recomputed after a read. What no
    database stores as JSON (see ``details_problem``) is a ``ValueError``."""
    normalized = json.loads(json.dumps(details or {}, cls=DjangoJSONEncoder))
    problem = details_problem(normalized)
    if problem:
        raise ValueError(f"audit details cannot be stored: {problem}")
    return normalized


def canonical_number(value: int | float) -> str:
    """The one spelling of a JSON number that every round trip (jsonb, SQLite) agrees on."""
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a JSON number")
    number = Decimal(repr(value))
    if number == number.to_integral_value():
        return str(int(number))  # also turns -0.0 into 0
    return format(number.normalize(), "f")


def _canonical_json(value) -> str:
    """Compact JSON with sorted keys and canonical numbers (version 2)."""
    if value is None or isinstance(value, bool | str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return canonical_number(value)
    if isinstance(value, dict):
        items = sorted((str(key), item) for key, item in value.items())
        return (
            "{"
            + ",".join(f"{json.dumps(key, ensure_ascii=False)}:{_canonical_json(item)}" for key, item in items)
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canonical_json(item) for item in value) + "]"
    raise TypeError(f"{type(value).__name__} is not JSON (normalize_details first)")


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
    version: int = HASH_VERSION,
) -> bytes:
    if version not in HASH_VERSIONS:
        raise ValueError(f"unknown audit hash version {version!r}")
    content = {
        "v": version,
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
    if version == 1:
        return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return _canonical_json(content).encode()


def content_hash(**fields) -> str:
    return hashlib.sha256(canonical_content(**fields)).hexdigest()
