"""Rendering an export, batch by batch, as CSV or JSON lines. The same sync iterator serves
WSGI directly and ASGI through ``astream`` (one worker-thread hop per batch): under ASGI
Django would otherwise read a sync iterator whole into memory before sending a byte."""

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator

from channels.db import database_sync_to_async
from django.core.serializers.json import DjangoJSONEncoder

from . import selectors

COLUMNS = [
    "id",
    "chain_seq",
    "created_at",
    "tenant_id",
    "actor_id",
    "actor_email",
    "action",
    "source",
    "resource_type",
    "resource_id",
    "details",
    "request_id",
    "ip",
    "user_agent",
    "prev_hash",
    "hash",
    "hash_version",
]
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
# A spreadsheet runs a cell starting with these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _row(record) -> dict:
    return {
        "id": record.id,
        "chain_seq": record.chain_seq,
        "created_at": record.created_at.isoformat(),
        "tenant_id": record.tenant_id,
        "actor_id": record.actor_id,
        "actor_email": record.actor_label,
        "action": record.action,
        "source": record.source,
        "resource_type": record.resource_type,
        "resource_id": record.resource_id,
        "details": record.details,
        "request_id": record.request_id,
        "ip": record.ip,
        "user_agent": record.user_agent,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
        "hash_version": record.hash_version,
    }


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def render(records, export_format: str) -> Iterator[bytes]:
    """Yields one chunk per batch of records (the CSV header first)."""
    if export_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        yield buffer.getvalue().encode()
        for batch in selectors.audit_export_batches(records):
            buffer.seek(0)
            buffer.truncate()
            writer.writerows([[_csv_cell(row[column]) for column in COLUMNS] for row in map(_row, batch)])
            yield buffer.getvalue().encode()
    else:
        for batch in selectors.audit_export_batches(records):
            lines = (json.dumps(_row(record), ensure_ascii=False, cls=DjangoJSONEncoder) for record in batch)
            yield ("\n".join(lines) + "\n").encode()


async def astream(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    _next = database_sync_to_async(next)
    while (chunk := await _next(chunks, None)) is not None:
        yield chunk
