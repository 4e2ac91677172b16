"""Writes of files: declare an upload, put its chunks, complete it, delete or expire it.

A file moves ``uploading -> ready`` (complete verified size and sha256), ``uploading ->
failed`` (checksum or size mismatch at complete) or ``uploading -> expired`` (no chunk for
``FILES_UPLOAD_TTL_HOURS``). Only ``ready`` files can be downloaded or attached.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import re
import unicodedata
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Tenant
from audits.services import audit_record
from config.core.errors import ApplicationError, Conflict, Forbidden

from . import selectors
from .models import File, FileChunk
from .storage import PIECE, BodyReader, backend_for, sha256_of

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FileError(ApplicationError):
    """A request about a file that cannot be done (status and code say why)."""


@dataclass
class ChunkResult:
    chunk: FileChunk
    # False when the same bytes were already stored at this index (an idempotent repeat).
    created: bool


def _expiry(now=None):
    return (now or timezone.now()) + timedelta(hours=settings.FILES_UPLOAD_TTL_HOURS)


def clean_filename(filename: str) -> str:
    """A name safe to store and to send back: the last path component, no control
    characters, at most 255 characters (the extension kept)."""
    name = unicodedata.normalize("NFC", filename).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip().strip(".")
    if len(name) > 255:
        stem, ext = os.path.splitext(name)
        name = stem[: 255 - len(ext)] + ext
    if not name:
        raise FileError("filename must name a file.", code="validation_error", details={"filename": ["invalid"]})
    return name


def content_type_allowed(content_type: str) -> bool:
    content_type = content_type.split(";", 1)[0].strip().lower()
    return any(
        pattern == "*" or fnmatch.fnmatchcase(content_type, pattern.lower())
        for pattern in settings.FILES_ALLOWED_CONTENT_TYPES
    )


def file_create(*, user, filename: str, size: int, content_type: str, sha256: str) -> File:
    """Declares an upload. Over ``FILES_MAX_BYTES`` or the tenant's quota: 413; a content
    type not allowed: 415. Returns the file (``uploading``) with its chunk size and count."""
    name = clean_filename(filename)
    sha256 = sha256.lower()
    if not _SHA256.match(sha256):
        raise FileError("sha256 must be 64 hex digits.", code="validation_error", details={"sha256": ["invalid"]})
    if size < 1:
        raise FileError("size must be at least 1 byte.", code="validation_error", details={"size": ["invalid"]})
    if size > settings.FILES_MAX_BYTES:
        raise FileError(
            f"A file may hold at most {settings.FILES_MAX_BYTES} bytes.",
            code="file_too_large",
            status=413,
            details={"max_bytes": settings.FILES_MAX_BYTES},
        )
    if not content_type_allowed(content_type):
        raise FileError(
            f"Content type {content_type!r} is not accepted.",
            code="unsupported_media_type",
            status=415,
            details={"allowed": list(settings.FILES_ALLOWED_CONTENT_TYPES)},
        )
    chunk_size = settings.FILES_CHUNK_BYTES
    backend = backend_for(settings.FILES_STORAGE)
    with transaction.atomic():
        # One tenant's declarations in turn, so two cannot both fit the last of the quota.
        Tenant.objects.select_for_update().only("id").get(pk=user.tenant_id)
        quota = settings.FILES_TENANT_QUOTA_BYTES
        if quota:
            held = selectors.tenant_bytes_held(tenant_id=user.tenant_id)
            if held + size > quota:
                raise FileError(
                    "This upload would exceed the tenant's storage quota.",
                    code="quota_exceeded",
                    status=413,
                    details={"quota_bytes": quota, "used_bytes": held},
                )
        now = timezone.now()
        file = File(
            tenant_id=user.tenant_id,
            owner=user,
            filename=name,
            content_type=content_type.strip(),
            size=size,
            sha256=sha256,
            chunk_size=chunk_size,
            chunk_count=math.ceil(size / chunk_size),
            backend=backend.name,
            created_at=now,
            updated_at=now,
            expires_at=_expiry(now),
        )
        file.storage_key, file.upload_id = backend.begin(file)
        file.save()
        audit_record(
            tenant=user.tenant,
            actor=user,
            action="file.created",
            resource_type="file",
            resource_id=file.pk,
            details={"filename": name, "size": size, "content_type": file.content_type, "backend": backend.name},
        )
    return file


def _check_writer(*, file: File, user) -> None:
    if file.owner_id != user.pk:
        raise Forbidden("Only the uploader may write this file.")
    if file.status != File.Status.UPLOADING:
        raise Conflict(
            f"The file is {file.status}; it takes no more chunks.",
            code="file_not_uploading",
            details={"status": file.status},
        )


def _claim_chunk(*, file: File, index: int, size: int) -> FileChunk | None:
    """Our claim on chunk ``index`` (a row with an empty sha256), or None when the chunk is
    stored already. 409 when another request is writing it right now."""
    try:
        with transaction.atomic():
            return FileChunk.objects.create(file=file, index=index, size=size)
    except IntegrityError:
        pass
    existing = FileChunk.objects.get(file=file, index=index)
    if existing.stored:
        return None
    # A writer that crashed leaves its claim; it is taken over once stale.
    stale = timezone.now() - timedelta(seconds=settings.FILES_CHUNK_CLAIM_SECONDS)
    now = timezone.now()
    taken = FileChunk.objects.filter(pk=existing.pk, sha256="", claimed_at__lt=stale).update(claimed_at=now)
    if taken:
        existing.claimed_at = now
        return existing
    raise Conflict(
        "This chunk is being written by another request; retry shortly.",
        code="chunk_in_progress",
        details={"index": index},
    )


def file_chunk_put(*, file: File, user, index: int, stream, length: int | None) -> ChunkResult:
    """Stores chunk ``index`` from ``stream`` (a file-like request body of ``length``
    bytes), read in pieces, never whole. The chunk's size must be exactly the expected one
    (413 over, 400 under or missing). Repeating a stored chunk with the same bytes is
    accepted (``created`` False); other bytes are 409 ``chunk_conflict``."""
    _check_writer(file=file, user=user)
    if not 0 <= index < file.chunk_count:
        raise FileError(
            f"Chunk index must be 0 to {file.chunk_count - 1}.",
            code="chunk_index_out_of_range",
            details={"index": index, "chunk_count": file.chunk_count},
        )
    expected = file.chunk_length(index)
    if length is None:
        raise FileError("Content-Length is required.", code="length_required", details={"expected_bytes": expected})
    if length > expected:
        raise FileError(
            f"Chunk {index} must be {expected} bytes.",
            code="chunk_too_large",
            status=413,
            details={"index": index, "expected_bytes": expected, "received_bytes": length},
        )
    if length < expected:
        raise FileError(
            f"Chunk {index} must be {expected} bytes.",
            code="chunk_size_mismatch",
            details={"index": index, "expected_bytes": expected, "received_bytes": length},
        )
    reader = BodyReader(stream, expected)
    chunk = _claim_chunk(file=file, index=index, size=expected)
    if chunk is None:
        stored = FileChunk.objects.get(file=file, index=index)
        reader.drain()
        if reader.count == expected and reader.hexdigest() == stored.sha256:
            return ChunkResult(chunk=stored, created=False)
        if reader.count != expected:
            raise _short_body(index, expected, reader.count)
        raise Conflict(
            f"Chunk {index} is already stored with other bytes.",
            code="chunk_conflict",
            details={"index": index, "stored_sha256": stored.sha256},
        )
    backend = backend_for(file.backend)
    try:
        chunk.storage_name, chunk.etag = backend.put_chunk(file, index, reader)
        if reader.count != expected:
            backend.discard_chunk(file, chunk)
            raise _short_body(index, expected, reader.count)
    except BaseException:
        FileChunk.objects.filter(pk=chunk.pk, sha256="").delete()
        raise
    chunk.sha256 = reader.hexdigest()
    now = timezone.now()
    with transaction.atomic():
        chunk.save(update_fields=["sha256", "etag", "storage_name"])
        File.objects.filter(pk=file.pk).update(updated_at=now, expires_at=_expiry(now))
    return ChunkResult(chunk=chunk, created=True)


def _short_body(index: int, expected: int, received: int) -> FileError:
    return FileError(
        f"Chunk {index} must be {expected} bytes; the body ended after {received}.",
        code="chunk_size_mismatch",
        details={"index": index, "expected_bytes": expected, "received_bytes": received},
    )


def file_complete(*, file: File, user) -> File:
    """Checks every chunk is there, then the size and the sha256 of the whole file, and
    marks it ``ready``. Missing chunks: 409 ``upload_incomplete`` (the file stays open).
    A mismatch: the file is marked ``failed``, its bytes removed, and 422
    ``checksum_mismatch``. Completing a ready file again returns it."""
    if file.status == File.Status.READY and file.owner_id == user.pk:
        return file
    _check_writer(file=file, user=user)
    chunks = selectors.file_chunks_stored(file=file)
    present = {chunk.index for chunk in chunks}
    missing = [i for i in range(file.chunk_count) if i not in present]
    if missing:
        raise Conflict(
            f"{len(missing)} chunk(s) missing.",
            code="upload_incomplete",
            details={"missing": missing[:1000], "missing_count": len(missing)},
        )
    backend = backend_for(file.backend)
    size = sum(chunk.size for chunk in chunks)
    actual = ""
    if size == file.size:
        backend.complete(file, chunks)
        size, actual = sha256_of(backend.read(file, chunks, 0, file.size - 1))
    if size != file.size or actual != file.sha256:
        _fail(file=file, user=user, chunks=chunks, backend=backend, size=size, actual=actual)
        if size != file.size:
            raise FileError(
                "The stored bytes do not add up to the declared size.",
                code="size_mismatch",
                status=422,
                details={"expected_size": file.size, "actual_size": size},
            )
        raise FileError(
            "The file's sha256 does not match the declared one.",
            code="checksum_mismatch",
            status=422,
            details={"expected_sha256": file.sha256, "actual_sha256": actual},
        )
    now = timezone.now()
    with transaction.atomic():
        done = File.objects.filter(pk=file.pk, status=File.Status.UPLOADING).update(
            status=File.Status.READY, completed_at=now, updated_at=now, upload_id=""
        )
        file.refresh_from_db()
        if done:
            audit_record(
                tenant=file.tenant_id,
                actor=user,
                action="file.completed",
                resource_type="file",
                resource_id=file.pk,
                details={"size": file.size, "sha256": file.sha256},
            )
    if file.status != File.Status.READY:
        raise Conflict(f"The file is {file.status}.", code="file_not_uploading", details={"status": file.status})
    return file


def _fail(*, file: File, user, chunks, backend, size: int, actual: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        updated = File.objects.filter(pk=file.pk, status=File.Status.UPLOADING).update(
            status=File.Status.FAILED,
            error="checksum_mismatch" if size == file.size else "size_mismatch",
            updated_at=now,
        )
        if updated:
            audit_record(
                tenant=file.tenant_id,
                actor=user,
                action="file.failed",
                resource_type="file",
                resource_id=file.pk,
                details={"expected_sha256": file.sha256, "actual_sha256": actual, "size": size},
            )
    file.refresh_from_db()
    _remove_bytes(file=file, backend=backend)


def _remove_bytes(*, file: File, backend=None) -> None:
    """Deletes the file's bytes and its chunk rows (best effort on storage: logged)."""
    backend = backend or backend_for(file.backend)
    chunks = list(FileChunk.objects.filter(file=file))
    try:
        backend.delete(file, chunks)
    except Exception:  # noqa: BLE001 - storage cleanup must not hide the outcome; logged
        logger.exception("could not delete the bytes of file %s", file.pk)
    FileChunk.objects.filter(file=file).delete()


def file_delete(*, file: File, user) -> None:
    """Deletes a file and its bytes (its uploader, or a tenant owner/admin). Messages that
    attached it keep their descriptor; its download is then 404."""
    if file.owner_id != user.pk and getattr(user, "role", "") not in ("owner", "admin"):
        raise Forbidden("Only the uploader or a tenant admin may delete this file.")
    file_id, tenant_id = file.pk, file.tenant_id
    _remove_bytes(file=file)
    with transaction.atomic():
        File.objects.filter(pk=file_id).delete()
        audit_record(tenant=tenant_id, actor=user, action="file.deleted", resource_type="file", resource_id=file_id)


def file_read_range(*, file: File, start: int, end: int):
    """The bytes ``start``..``end`` (inclusive) of a ready file, as an iterator of pieces."""
    chunks = selectors.file_chunks_stored(file=file) if file.backend == File.Backend.LOCAL else []
    return backend_for(file.backend).read(file, chunks, start, end)


def file_download_record(*, file: File, user, start: int, end: int, redirected: bool = False) -> None:
    audit_record(
        tenant=file.tenant_id,
        actor=user,
        action="file.downloaded",
        resource_type="file",
        resource_id=file.pk,
        details={"start": start, "end": end, "redirected": redirected},
    )


def file_presigned_url(*, file: File, disposition: str) -> str | None:
    """A short-lived URL for the file's bytes when the backend offers one and it is on."""
    if file.backend == File.Backend.S3 and settings.FILES_S3_REDIRECT:
        return backend_for(file.backend).presigned_url(file, disposition=disposition)
    return None


def files_purge_stale(*, now=None, dry_run: bool = False) -> list[File]:
    """Uploads with no new chunk since ``expires_at``: their chunks are removed and they
    become ``expired`` (quota freed). Returns the files concerned (``dry_run``: changes
    nothing)."""
    now = now or timezone.now()
    stale = list(File.objects.filter(status=File.Status.UPLOADING, expires_at__lt=now).order_by("expires_at"))
    if dry_run:
        return stale
    purged = []
    for file in stale:
        with transaction.atomic():
            expired = File.objects.filter(pk=file.pk, status=File.Status.UPLOADING, expires_at__lt=now).update(
                status=File.Status.EXPIRED, updated_at=now
            )
            if not expired:
                continue  # a chunk arrived meanwhile
            audit_record(
                tenant=file.tenant_id,
                action="file.expired",
                resource_type="file",
                resource_id=file.pk,
                details={"expires_at": file.expires_at.isoformat()},
            )
        _remove_bytes(file=file)
        file.status = File.Status.EXPIRED
        purged.append(file)
    return purged


def attachment_descriptor(file: File) -> dict:
    """How a message carries a file: enough to show and fetch it (and to hand to a channel
    connector, which applies its platform's size and type limits)."""
    return {
        "id": str(file.pk),
        "name": file.filename,
        "size": file.size,
        "content_type": file.content_type,
        "sha256": file.sha256,
        "download_path": f"/api/v1/files/{file.pk}/content",
    }


def file_attachments_resolve(*, tenant_id: int, file_ids: list) -> list[dict]:
    """Descriptors of the files a message names, in order, duplicates once. Every id must
    be a ready file of ``tenant_id``; otherwise 400 ``invalid_attachment`` naming them."""
    ids = list(dict.fromkeys(str(file_id) for file_id in file_ids))
    if len(ids) > settings.FILES_MAX_ATTACHMENTS:
        raise FileError(
            f"A message may carry at most {settings.FILES_MAX_ATTACHMENTS} attachments.",
            code="invalid_attachment",
            details={"attachments": [f"at most {settings.FILES_MAX_ATTACHMENTS}"]},
        )
    found = {str(f.pk): f for f in File.objects.filter(tenant_id=tenant_id, pk__in=ids, status=File.Status.READY)}
    unusable = [file_id for file_id in ids if file_id not in found]
    if unusable:
        raise FileError(
            "Attachments must be ready files of this tenant.",
            code="invalid_attachment",
            details={"attachments": unusable},
        )
    return [attachment_descriptor(found[file_id]) for file_id in ids]


__all__ = [
    "PIECE",
    "ChunkResult",
    "FileError",
    "file_attachments_resolve",
    "file_chunk_put",
    "file_complete",
    "file_create",
    "file_delete",
    "files_purge_stale",
]
