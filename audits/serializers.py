import json
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import ISO_8601, serializers
from rest_framework.settings import api_settings

from config.api.fields import MAX_ID, StrictCharField

from .hashing import details_problem
from .models import AuditRecord

MAX_DETAILS_BYTES = 16 * 1024


class AuditRecordSerializer(serializers.ModelSerializer):
    """``chain_seq``, ``prev_hash`` and ``hash`` are null until the record is sealed
    (``sealed``; docs/audits.md): a record is returned unsealed right after it is written."""

    actor_id = serializers.IntegerField(read_only=True, allow_null=True)
    actor_email = serializers.CharField(source="actor_label", read_only=True)
    tenant_id = serializers.IntegerField(read_only=True)
    sealed = serializers.BooleanField(read_only=True, help_text="Chained and hashed (seq, prev_hash, hash set).")

    class Meta:
        model = AuditRecord
        fields = [
            "id",
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
            "created_at",
            "chain_seq",
            "prev_hash",
            "hash",
            "hash_version",
            "sealed",
            "sealed_at",
        ]
        read_only_fields = fields


# The list's rows come from ``.values()`` and are turned into the body by
# ``audit_record_rows``: the same JSON as ``AuditRecordSerializer`` (a test compares the two
# on the same records) without building a ModelSerializer and its fields per request and
# a model instance per row (the largest cost of a list page in the profile; docs/overhead.md).
AUDIT_ROW_FIELDS = (
    "id",
    "tenant_id",
    "actor_id",
    "actor_label",
    "action",
    "source",
    "resource_type",
    "resource_id",
    "details",
    "request_id",
    "ip",
    "user_agent",
    "created_at",
    "chain_seq",
    "prev_hash",
    "hash",
    "hash_version",
    "sealed_at",
)

_DATETIME = serializers.DateTimeField(read_only=True)
_UTC_OFFSET = timedelta(0)


def _utc_iso(value) -> str | None:
    """DRF's ``DateTimeField.to_representation`` for a datetime in UTC while the current
    time zone is UTC and the format ISO 8601 (what ``_datetime_renderer`` checks): the same
    string (``...Z``) without DRF's per-value time-zone conversion; anything else goes
    through DRF's own."""
    if value is None:
        return None
    if value.utcoffset() != _UTC_OFFSET:
        return _DATETIME.to_representation(value)
    return value.replace(tzinfo=None).isoformat() + "Z"


def _datetime_renderer():
    output_format = getattr(_DATETIME, "format", api_settings.DATETIME_FORMAT)
    if (
        settings.USE_TZ
        and isinstance(output_format, str)
        and output_format.lower() == ISO_8601
        and timezone.get_current_timezone().utcoffset(None) == _UTC_OFFSET
        and timezone.get_current_timezone_name() == "UTC"
    ):
        return _utc_iso
    return _DATETIME.to_representation


def audit_record_values(rows) -> list[dict]:
    """``.values(*AUDIT_ROW_FIELDS)``'s dicts from a raw statement's tuples of those columns
    (``selectors.audit_record_page_statement``), ``details`` loaded as the ORM loads it."""
    details = AuditRecord._meta.get_field("details")
    at = AUDIT_ROW_FIELDS.index("details")
    values = []
    for row in rows:
        value = dict(zip(AUDIT_ROW_FIELDS, row, strict=True))
        value["details"] = details.from_db_value(row[at], None, None)
        values.append(value)
    return values


def audit_record_rows(rows) -> list[dict]:
    """``AuditRecordSerializer(many=True).data`` for rows of ``.values(*AUDIT_ROW_FIELDS)``."""
    when = _datetime_renderer()
    return [
        {
            "id": row["id"],
            "tenant_id": row["tenant_id"],
            "actor_id": row["actor_id"],
            "actor_email": row["actor_label"],
            "action": row["action"],
            "source": row["source"],
            "resource_type": row["resource_type"],
            "resource_id": row["resource_id"],
            "details": row["details"],
            "request_id": row["request_id"],
            "ip": row["ip"],
            "user_agent": row["user_agent"],
            "created_at": when(row["created_at"]),
            "chain_seq": row["chain_seq"],
            "prev_hash": row["prev_hash"],
            "hash": row["hash"],
            "hash_version": row["hash_version"],
            "sealed": row["chain_seq"] is not None,
            "sealed_at": when(row["sealed_at"]) if row["sealed_at"] is not None else None,
        }
        for row in rows
    ]


# The same rows built by PostgreSQL (the list's page on the async pool, audits/views.py):
# ``row_to_json`` writes each row compact, in the serializer's key order, with
# ``created_at``/``sealed_at`` spelt as ``_utc_iso`` spells them (``...Z``, microseconds
# only when there are any). ``details`` is embedded as PostgreSQL's own text of the jsonb
# (the same keys, values and order the ORM loads; only its whitespace differs), so a page
# is neither parsed nor rebuilt in Python: the rows' loading and building were 40% of
# the page's CPU (docs/benchmarks.md, "Sixth round").
_ISO_SECONDS = 'YYYY-MM-DD"T"HH24:MI:SS'


def _utc_iso_sql(column: str) -> str:
    """``_utc_iso`` of a ``timestamptz`` column, in SQL (NULL stays NULL)."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"to_char({utc}, '{_ISO_SECONDS}')"
        f" || CASE WHEN to_char({utc}, 'US') = '000000' THEN '' ELSE to_char({utc}, '.US') END || 'Z'"
    )


def _row_json_sql(table: str) -> str:
    """The JSON text of ``audit_record_rows``' row for ``table``'s row (an alias whose
    columns are named as ``AUDIT_ROW_FIELDS``)."""
    t = table
    fields = [
        f"{t}.id",
        f"{t}.tenant_id",
        f"{t}.actor_id",
        f"{t}.actor_label AS actor_email",
        f"{t}.action",
        f"{t}.source",
        f"{t}.resource_type",
        f"{t}.resource_id",
        f"{t}.details",
        f"{t}.request_id",
        f"{t}.ip",
        f"{t}.user_agent",
        f"{_utc_iso_sql(f'{t}.created_at')} AS created_at",
        f"{t}.chain_seq",
        f"{t}.prev_hash",
        f"{t}.hash",
        f"{t}.hash_version",
        f"{t}.chain_seq IS NOT NULL AS sealed",
        f"{_utc_iso_sql(f'{t}.sealed_at')} AS sealed_at",
    ]
    return f"(SELECT row_to_json(j)::text FROM (SELECT {', '.join(fields)}) AS j)"


def audit_record_json_statement(page_sql: str, keyset) -> str | None:
    """``page_sql`` (``selectors.audit_record_page_statement`` selecting
    ``AUDIT_ROW_FIELDS``) read as ``(position, row JSON)`` pairs in the same order:
    ``position`` the value of ``keyset``'s position field (what the paginator's cursor is
    made of), ``row JSON`` the text of ``audit_record_rows``' row. None when the body's
    dates are not ``_utc_iso``'s (another time zone or format): then rows are built in
    Python. The page is read first and its rows turned into JSON after, so only the page's
    rows are."""
    if _datetime_renderer() is not _utc_iso:
        return None
    order = ", ".join(
        f"page.{name.lstrip('-')} {'DESC' if name.startswith('-') else 'ASC'}" for name in keyset.ordering
    )
    return f"SELECT page.{keyset.position_field}, {_row_json_sql('page')} FROM ({page_sql}) AS page ORDER BY {order}"


class AuditRecordCreateSerializer(serializers.Serializer):
    """A custom event from an API client: its action lives under ``custom.``."""

    action = serializers.RegexField(
        r"^custom(\.[a-z0-9_]+)+$",
        max_length=100,
        error_messages={
            "invalid": "Custom actions are dotted lower-case names under 'custom.', e.g. custom.report.viewed."
        },
    )
    resource_type = StrictCharField(max_length=50, required=False, default="", allow_blank=True)
    resource_id = StrictCharField(max_length=64, required=False, default="", allow_blank=True)
    details = serializers.DictField(required=False, default=dict)

    def validate_details(self, value):
        encoded = json.dumps(value)
        if len(encoded.encode()) > MAX_DETAILS_BYTES:
            raise serializers.ValidationError(f"At most {MAX_DETAILS_BYTES} bytes of JSON.")
        problem = details_problem(value)
        if problem:
            raise serializers.ValidationError(f"Cannot be stored: {problem}.")
        return value


class AuditRecordFilterSerializer(serializers.Serializer):
    """Query parameters of the list and the export."""

    action = serializers.CharField(
        max_length=100, required=False, help_text="Exact action, or a namespace with '.*' (e.g. auth.*)."
    )
    actor = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False, help_text="Actor user id.")
    resource_type = serializers.CharField(max_length=50, required=False)
    resource_id = serializers.CharField(max_length=64, required=False)
    source = serializers.ChoiceField(choices=AuditRecord.Source.choices, required=False)
    since = serializers.DateTimeField(required=False, help_text="Created at or after (ISO 8601).")
    until = serializers.DateTimeField(required=False, help_text="Created before (ISO 8601).")

    def validate(self, attrs):
        if attrs.get("since") and attrs.get("until") and attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError({"until": ["Must be after since."]})
        return attrs


# The list's query parameters that filter (the others, cursor and page_size, paginate).
AUDIT_FILTER_PARAMS = frozenset(AuditRecordFilterSerializer().fields)


class AuditExportParamsSerializer(AuditRecordFilterSerializer):
    format = serializers.ChoiceField(choices=["csv", "jsonl"], required=False, default="jsonl")
