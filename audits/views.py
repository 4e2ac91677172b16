import orjson
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from config.api import asyncdb
from config.api.fast import PageRequest
from config.api.idempotency import idempotent
from config.api.views import TenantScopedViewSet

from . import exports, selectors, services
from .models import AuditRecord
from .serializers import (
    AUDIT_FILTER_PARAMS,
    AUDIT_ROW_FIELDS,
    AuditExportParamsSerializer,
    AuditRecordCreateSerializer,
    AuditRecordFilterSerializer,
    AuditRecordSerializer,
    audit_record_json_statement,
    audit_record_rows,
    audit_record_values,
)


class AuditRecordViewSet(mixins.RetrieveModelMixin, TenantScopedViewSet):
    """The tenant's audit trail. Owners and admins see every record of the tenant, members
    their own. Append-only: there is no update or delete (405)."""

    serializer_class = AuditRecordSerializer
    cursor_ordering = ("-created_at", "-id")
    lookup_value_regex = "[0-9]+"

    def select(self, *, tenant, user):
        return selectors.audit_record_list(tenant=tenant, user=user)

    @extend_schema(parameters=[AuditRecordFilterSerializer], responses={200: AuditRecordSerializer(many=True)})
    def list(self, request):
        return Response(self.list_body(request, request.user))

    @classmethod
    async def fast_list(cls, request, user):
        """``list`` served async (config/api/fast.py): the same body. On PostgreSQL the
        page's statement (``selectors.audit_record_page_statement``, no ORM compilation,
        its rows' JSON written by PostgreSQL: ``audit_record_json_statement``) runs in the
        event loop on the async pool (``config.api.asyncdb``), no thread hop;
        under the WSGI handler (tests) on Django's connection in a thread; elsewhere
        (SQLite) ``list_body`` in a thread."""
        page_request = PageRequest(request)
        if not asyncdb.available():
            return await sync_to_async(cls.list_body)(page_request, user)
        filters = cls.list_filters(page_request)
        paginator = cls.pagination_class()
        keyset = paginator.plan(page_request, AuditRecord, view=cls)
        sql, params = selectors.audit_record_page_statement(
            tenant=user.tenant_id, user=user, filters=filters, keyset=keyset, columns=AUDIT_ROW_FIELDS
        )
        json_sql = audit_record_json_statement(sql, keyset)
        if isinstance(request, ASGIRequest):
            rows = await asyncdb.fetch_all(json_sql or sql, params)
        else:  # the WSGI handler runs this view in a new event loop per request
            rows = await sync_to_async(asyncdb.fetch_all_sync)(json_sql or sql, params)
        if json_sql is None:
            return paginator.page_body(audit_record_rows(paginator.take(audit_record_values(rows))))
        # Each row as PostgreSQL wrote it, embedded in the body as it is (orjson.Fragment).
        position = keyset.position_field
        page = paginator.take([{position: value, "json": text} for value, text in rows])
        return paginator.page_body([orjson.Fragment(row["json"]) for row in page])

    @classmethod
    def list_filters(cls, request) -> dict:
        """The list's validated filters (``AuditRecordFilterSerializer``; 400 envelope)."""
        if AUDIT_FILTER_PARAMS.isdisjoint(request.query_params):
            # Without a filter parameter the serializer's answer is {} (every field optional,
            # none with a default): skip building it, ~0.3 ms of a page.
            return {}
        params = AuditRecordFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        return params.validated_data

    @classmethod
    def list_body(cls, request, user) -> dict:
        """The page body through the ORM (the DRF view's ``list``): filters validated, the
        caller's scope, keyset pagination, plain rows (not model instances through a
        ModelSerializer: same body, pinned). ``request`` needs ``query_params`` and
        ``build_absolute_uri`` (a DRF request or a PageRequest)."""
        filters = cls.list_filters(request)
        records = selectors.audit_record_filter(selectors.audit_record_list(tenant=user.tenant, user=user), filters)
        paginator = cls.pagination_class()
        page = paginator.paginate_queryset(records.values(*AUDIT_ROW_FIELDS), request, view=cls)
        return paginator.page_body(audit_record_rows(page))

    @extend_schema(request=AuditRecordCreateSerializer, responses={201: AuditRecordSerializer})
    @idempotent
    def create(self, request):
        data = AuditRecordCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        record = services.audit_custom_record(actor=request.user, **data.validated_data)
        return Response(AuditRecordSerializer(record).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[AuditExportParamsSerializer],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, header row first, chain order."),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="One JSON record a line."),
        },
    )
    @action(detail=False, methods=["get"], url_path="export")
    def export(self, request):
        """Streams the records the caller may see (filters as on the list) oldest first,
        and records an ``audit.exported`` event."""
        params = AuditExportParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        filters = dict(params.validated_data)
        export_format = filters.pop("format")
        records = selectors.audit_record_filter(self.get_queryset(), filters)
        services.audit_export_record(actor=request.user, export_format=export_format, filters=filters)

        chunks = exports.render(records, export_format)
        streaming = exports.astream(chunks) if isinstance(request._request, ASGIRequest) else chunks
        response = StreamingHttpResponse(streaming, content_type=exports.CONTENT_TYPES[export_format])
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audits-{stamp}.{export_format}"'
        response["Cache-Control"] = "no-store"
        return response
