"""Where file bytes live, behind one small interface used by ``files.services``.

- ``LocalBackend``: Django's ``FileSystemStorage`` under ``FILES_LOCAL_ROOT``. Each chunk
  is one stored file; a ready file *is* its ordered chunks (no second copy at complete;
  a read maps its byte range onto them).
- ``S3Backend``: django-storages' ``S3Storage`` (bucket, endpoint, keys, presigned URLs)
  and its boto3 client for what the storage API has no verb for: a multipart upload where
  chunk ``i`` is part ``i + 1``, completed at ``complete``.

Every method streams: bytes move in ``PIECE`` sized pieces, never a whole chunk or file in
memory (an S3 part is spooled to a temporary file on disk, which botocore can seek and
checksum).
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from functools import cache

from django.conf import settings
from django.core.files import File as DjangoFile
from django.core.files.storage import FileSystemStorage

PIECE = 256 * 1024


class BodyReader:
    """A file-like over a request body that reads at most ``limit`` bytes, hashing and
    counting what passes. ``read()`` without a size still returns one piece at most, so a
    careless consumer cannot pull the whole body into memory."""

    def __init__(self, stream, limit: int):
        self._stream = stream
        self._left = limit
        self.sha256 = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = PIECE if size is None or size < 0 else min(size, PIECE)
        data = self._stream.read(min(size, self._left))
        if data:
            self._left -= len(data)
            self.count += len(data)
            self.sha256.update(data)
        return data

    def drain(self) -> None:
        while self.read(PIECE):
            pass

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


class LocalBackend:
    name = "local"

    def __init__(self, location=None):
        self.storage = FileSystemStorage(location=location or settings.FILES_LOCAL_ROOT)

    def begin(self, file) -> tuple[str, str]:
        """(storage_key, upload_id) of a new upload."""
        return "", ""

    def put_chunk(self, file, index: int, reader: BodyReader) -> tuple[str, str]:
        """Stores one chunk from ``reader``; returns (storage_name, etag). A unique name per
        write: a failed or losing write never touches the stored chunk."""
        name = f"{file.tenant_id}/{file.pk}/{index:06d}-{uuid.uuid4().hex[:12]}"
        try:
            return self.storage.save(name, DjangoFile(reader, name=name)), ""
        except BaseException:
            # The body broke off mid-write (client gone, disk error): no partial chunk stays.
            self.storage.delete(name)
            raise

    def discard_chunk(self, file, chunk) -> None:
        if chunk.storage_name:
            self.storage.delete(chunk.storage_name)

    def complete(self, file, chunks) -> None:
        """Nothing to assemble: the chunks are the file."""

    def read(self, file, chunks, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start``..``end`` (inclusive) of the ready file, in pieces."""
        index = start // file.chunk_size
        offset = start - index * file.chunk_size
        remaining = end - start + 1
        by_index = {chunk.index: chunk for chunk in chunks}
        while remaining > 0:
            with self.storage.open(by_index[index].storage_name, "rb") as handle:
                handle.seek(offset)
                while remaining > 0:
                    data = handle.read(min(PIECE, remaining))
                    if not data:
                        break
                    remaining -= len(data)
                    yield data
            index, offset = index + 1, 0

    def presigned_url(self, file, *, disposition: str) -> str | None:
        return None

    def delete(self, file, chunks) -> None:
        for chunk in chunks:
            self.discard_chunk(file, chunk)


class S3Backend:
    name = "s3"

    def __init__(self):
        from storages.backends.s3 import S3Storage

        self.storage = S3Storage(
            bucket_name=settings.FILES_S3_BUCKET,
            endpoint_url=settings.FILES_S3_ENDPOINT_URL,
            access_key=settings.FILES_S3_ACCESS_KEY_ID,
            secret_key=settings.FILES_S3_SECRET_ACCESS_KEY,
            region_name=settings.FILES_S3_REGION,
            location=settings.FILES_S3_PREFIX.strip("/"),
            querystring_auth=True,
            querystring_expire=settings.FILES_S3_PRESIGN_SECONDS,
            file_overwrite=True,
            default_acl=None,
        )
        self.bucket = settings.FILES_S3_BUCKET

    @property
    def client(self):
        return self.storage.connection.meta.client

    def _key(self, name: str) -> str:
        # The storage's own naming (prefix, normalisation), so storage.url/delete agree.
        from storages.utils import clean_name

        return self.storage._normalize_name(clean_name(name))

    def begin(self, file) -> tuple[str, str]:
        name = f"{file.tenant_id}/{file.pk}"
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=self._key(name), ContentType=file.content_type
        )
        return name, upload["UploadId"]

    def put_chunk(self, file, index: int, reader: BodyReader) -> tuple[str, str]:
        with tempfile.TemporaryFile() as spool:
            while data := reader.read(PIECE):
                spool.write(data)
            size = spool.tell()
            spool.seek(0)
            part = self.client.upload_part(
                Bucket=self.bucket,
                Key=self._key(file.storage_key),
                UploadId=file.upload_id,
                PartNumber=index + 1,
                Body=spool,
                ContentLength=size,
            )
        return "", part["ETag"]

    def discard_chunk(self, file, chunk) -> None:
        """A part is replaced by the next upload of its number, or dropped with the upload."""

    def complete(self, file, chunks) -> None:
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._key(file.storage_key),
                UploadId=file.upload_id,
                MultipartUpload={"Parts": [{"PartNumber": c.index + 1, "ETag": c.etag} for c in chunks]},
            )
        except self.client.exceptions.NoSuchUpload:
            # Completed by an earlier attempt that stopped before marking the file ready:
            # the object is there (the sha256 check that follows reads it).
            self.client.head_object(Bucket=self.bucket, Key=self._key(file.storage_key))

    def read(self, file, chunks, start: int, end: int) -> Iterator[bytes]:
        body = self.client.get_object(
            Bucket=self.bucket, Key=self._key(file.storage_key), Range=f"bytes={start}-{end}"
        )["Body"]
        try:
            yield from body.iter_chunks(PIECE)
        finally:
            body.close()

    def presigned_url(self, file, *, disposition: str) -> str | None:
        return self.storage.url(
            file.storage_key,
            parameters={"ResponseContentDisposition": disposition, "ResponseContentType": file.content_type},
            expire=settings.FILES_S3_PRESIGN_SECONDS,
        )

    def delete(self, file, chunks) -> None:
        if file.upload_id and file.status != "ready":
            try:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._key(file.storage_key), UploadId=file.upload_id
                )
            except self.client.exceptions.NoSuchUpload:
                pass
        if file.storage_key:
            self.storage.delete(file.storage_key)


@cache
def _local(location) -> LocalBackend:
    return LocalBackend(location)


def backend_for(name: str):
    """The backend holding a file (``File.backend``), configured from the current settings."""
    if name == "s3":
        return S3Backend()
    return _local(str(settings.FILES_LOCAL_ROOT))


def sha256_of(pieces: Iterable[bytes]) -> tuple[int, str]:
    """(size, sha256 hex) of a stream of pieces."""
    digest, size = hashlib.sha256(), 0
    for data in pieces:
        size += len(data)
        digest.update(data)
    return size, digest.hexdigest()
