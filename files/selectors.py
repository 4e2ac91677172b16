"""Reads of files, always scoped to one tenant (another tenant's file is not found)."""

import uuid

from django.db.models import Prefetch, QuerySet, Sum

from config.core.errors import NotFound

from .models import File, FileChunk


def file_list(*, tenant, user) -> QuerySet[File]:
    """The tenant's files (any member may read a file shared in its conversations)."""
    if user is None:
        raise ValueError("file_list needs the reading user")
    return File.objects.for_tenant(tenant).prefetch_related(_uploading_chunks())


def _uploading_chunks() -> Prefetch:
    # Only an upload in progress shows its chunks; a ready local file has up to 256 rows.
    return Prefetch(
        "chunks",
        queryset=FileChunk.objects.filter(file__status=File.Status.UPLOADING).only("id", "file_id", "index", "sha256"),
    )


def file_get(*, tenant, file_id) -> File:
    try:
        file_id = uuid.UUID(str(file_id))
    except ValueError:
        raise NotFound("File not found.") from None
    file = File.objects.for_tenant(tenant).filter(pk=file_id).prefetch_related(_uploading_chunks()).first()
    if file is None:
        raise NotFound("File not found.")
    return file


def file_chunks_stored(*, file: File) -> list[FileChunk]:
    """The chunks written in full, in order."""
    return list(FileChunk.objects.filter(file=file).exclude(sha256="").order_by("index"))


def file_chunk_indexes(*, file: File) -> list[int]:
    return list(
        FileChunk.objects.filter(file=file).exclude(sha256="").order_by("index").values_list("index", flat=True)
    )


def tenant_bytes_held(*, tenant_id) -> int:
    """Bytes counted against the tenant's quota: files being uploaded or ready."""
    held = File.objects.filter(tenant_id=tenant_id, status__in=[File.Status.UPLOADING, File.Status.READY]).aggregate(
        total=Sum("size")
    )["total"]
    return held or 0
