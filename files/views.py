"""Files API: declare, put chunks, complete, show, download (``Range``), delete.

Thin: each action calls one service or selector. The chunk PUT reads the raw body itself
(no DRF parser runs, the body is never read whole); the download streams pieces from the
backend through an async iterator, so under ASGI nothing is buffered.
"""

import re

from asgiref.sync import sync_to_async
from django.http import HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from config.api.errors import error_response
from config.api.idempotency import idempotent
from config.api.renderers import FastJSONRenderer
from config.api.views import TenantScopedViewSet
from config.core.errors import Conflict

from . import selectors, services
from .models import File
from .serializers import ChunkSerializer, FileCreateSerializer, FileSerializer

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
UNSATISFIABLE = "unsatisfiable"


def parse_range(header: str | None, size: int):
    """One ``bytes=`` range of RFC 9110 as (start, end) inclusive; None to send the whole
    file (no header, a malformed one or several ranges: a server may ignore Range);
    ``UNSATISFIABLE`` for a range outside the file (416)."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0:
            return UNSATISFIABLE
        return max(0, size - length), size - 1
    start = int(first)
    if start >= size:
        return UNSATISFIABLE
    end = int(last) if last else size - 1
    if end < start:
        return None
    return start, min(end, size - 1)


async def _in_threads(iterator):
    """A sync iterator of pieces as an async one: each piece is read on a worker thread,
    so the ASGI server sends it before the next is read (a sync iterator would be
    consumed whole first)."""
    done = object()
    try:
        while True:
            piece = await sync_to_async(next, thread_sensitive=False)(iterator, done)
            if piece is done:
                return
            yield piece
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=False)()


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    return header.strip() == "*" or etag in [value.strip().removeprefix("W/") for value in header.split(",")]


class FileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantScopedViewSet):
    """The tenant's files. Uploading and completing belong to the uploader."""

    serializer_class = FileSerializer
    lookup_value_regex = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def select(self, *, tenant, user):
        return selectors.file_list(tenant=tenant, user=user)

    def get_file(self) -> File:
        return selectors.file_get(tenant=self.request.user.tenant_id, file_id=self.kwargs["pk"])

    def perform_content_negotiation(self, request, force=False):
        # The download answers bytes of the file's own type; its errors are JSON whatever
        # the client accepts.
        if self.action == "content":
            return FastJSONRenderer(), FastJSONRenderer.media_type
        return super().perform_content_negotiation(request, force=force)

    @extend_schema(request=FileCreateSerializer, responses={201: FileSerializer})
    @idempotent
    def create(self, request):
        data = FileCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        file = services.file_create(user=request.user, **data.validated_data)
        return Response(
            self.get_serializer(selectors.file_get(tenant=file.tenant_id, file_id=file.pk)).data, status=201
        )

    def perform_destroy(self, instance):
        services.file_delete(file=instance, user=self.request.user)

    @extend_schema(
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={200: ChunkSerializer, 201: ChunkSerializer},
        parameters=[OpenApiParameter("index", OpenApiTypes.INT, OpenApiParameter.PATH)],
    )
    @action(detail=True, methods=["put"], url_path=r"chunks/(?P<index>[0-9]{1,9})")
    def chunks(self, request, pk=None, index=None):
        raw = request.META.get("CONTENT_LENGTH") or ""
        length = int(raw) if raw.isdigit() else None
        result = services.file_chunk_put(
            file=self.get_file(), user=request.user, index=int(index), stream=request._request, length=length
        )
        chunk = result.chunk
        body = {"index": chunk.index, "size": chunk.size, "sha256": chunk.sha256, "created": result.created}
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)

    @extend_schema(request=None, responses={200: FileSerializer})
    @action(detail=True, methods=["post"])
    def complete(self, request, pk=None):
        file = services.file_complete(file=self.get_file(), user=request.user)
        return Response(self.get_serializer(file).data)

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="The whole file"),
            (206, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="One byte range"),
            302: OpenApiResponse(description="Redirect to a short-lived presigned URL (S3, FILES_S3_REDIRECT)"),
            304: OpenApiResponse(description="Not modified (If-None-Match)"),
        },
        parameters=[
            OpenApiParameter("Range", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False),
            OpenApiParameter("If-Range", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False),
            OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False),
        ],
    )
    @action(detail=True, methods=["get"])
    def content(self, request, pk=None):
        file = self.get_file()
        if file.status != File.Status.READY:
            raise Conflict(f"The file is {file.status}.", code="file_not_ready", details={"status": file.status})
        etag = f'"{file.sha256}"'
        disposition = content_disposition_header(as_attachment=True, filename=file.filename)
        url = services.file_presigned_url(file=file, disposition=disposition)
        if url:
            services.file_download_record(file=file, user=request.user, start=0, end=file.size - 1, redirected=True)
            response = HttpResponse(status=302)
            response["Location"] = url
            response["Cache-Control"] = "no-store"
            return response
        common = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, no-cache"}
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            response = HttpResponse(status=304)
            for name, value in common.items():
                response[name] = value
            return response
        if_range = request.headers.get("If-Range")
        wanted = parse_range(request.headers.get("Range"), file.size) if not if_range or if_range == etag else None
        if wanted == UNSATISFIABLE:
            return error_response(
                416,
                "range_not_satisfiable",
                "The requested range is outside the file.",
                {"size": file.size},
                headers={"Content-Range": f"bytes */{file.size}", **common},
            )
        start, end = wanted or (0, file.size - 1)
        services.file_download_record(file=file, user=request.user, start=start, end=end)
        response = StreamingHttpResponse(
            _in_threads(services.file_read_range(file=file, start=start, end=end)),
            status=206 if wanted else 200,
            content_type=file.content_type,
        )
        response["Content-Length"] = str(end - start + 1)
        if wanted:
            response["Content-Range"] = f"bytes {start}-{end}/{file.size}"
        response["Content-Disposition"] = disposition
        # Whatever type the uploader declared, a browser must not run it on our origin.
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "sandbox"
        for name, value in common.items():
            response[name] = value
        return response
