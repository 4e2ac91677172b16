"""Files: resumable chunked uploads (files app, docs/files.md)."""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .base import MEDIA_ROOT
from .env import env

MIB = 1024 * 1024

# Where file bytes live: "local" (a folder, the embedded default) or "s3" (S3/MinIO through
# django-storages, multipart upload). Each file remembers its backend, so switching this
# only affects new uploads.
FILES_STORAGE = env.str("FILES_STORAGE", default="local")
# Folder of the local backend (chunks of each file); gitignored under MEDIA_ROOT by default.
FILES_LOCAL_ROOT = Path(env.str("FILES_LOCAL_ROOT", default=str(Path(str(MEDIA_ROOT)) / "files")))
# Largest file accepted (bytes); 2 GiB by default. A bigger declared size is 413.
FILES_MAX_BYTES = env.int("FILES_MAX_BYTES", default=2 * 1024 * MIB)
# Bytes of one chunk (each PUT carries exactly this, the last one the rest). On S3 each
# chunk is one multipart part, so it must be at least 5 MiB there.
FILES_CHUNK_BYTES = env.int("FILES_CHUNK_BYTES", default=8 * MIB)
# Bytes a tenant may hold in files being uploaded or ready (0: no quota). Over it: 413.
FILES_TENANT_QUOTA_BYTES = env.int("FILES_TENANT_QUOTA_BYTES", default=20 * 1024 * MIB)
# Content types a file may declare: exact ("application/pdf"), a family ("image/*") or "*"
# for any. Others are 415.
FILES_ALLOWED_CONTENT_TYPES = env.list(
    "FILES_ALLOWED_CONTENT_TYPES",
    default=[
        "image/*",
        "audio/*",
        "video/*",
        "text/*",
        "application/pdf",
        "application/json",
        "application/zip",
        "application/gzip",
        "application/octet-stream",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.*",
        "application/vnd.ms-excel",
    ],
)
# Hours an upload may sit without a new chunk before it expires (purge_stale_uploads, beat).
FILES_UPLOAD_TTL_HOURS = env.int("FILES_UPLOAD_TTL_HOURS", default=24)
# Seconds a chunk being written is reserved for its writer; a crashed writer's claim is
# taken over after this (until then a concurrent PUT of the same index is 409 in progress).
FILES_CHUNK_CLAIM_SECONDS = env.int("FILES_CHUNK_CLAIM_SECONDS", default=300)
# How many files one message may reference.
FILES_MAX_ATTACHMENTS = 10

# --- S3-compatible object storage (FILES_STORAGE=s3) ---
# Bucket that holds the files (must exist).
FILES_S3_BUCKET = env.str("FILES_S3_BUCKET", default="")
# Endpoint of an S3-compatible server (MinIO: http://minio:9000); empty for AWS S3.
FILES_S3_ENDPOINT_URL = env.str("FILES_S3_ENDPOINT_URL", default="") or None
# Credentials; empty falls back to boto3's own chain (instance role, ~/.aws).
FILES_S3_ACCESS_KEY_ID = env.str("FILES_S3_ACCESS_KEY_ID", default="") or None
FILES_S3_SECRET_ACCESS_KEY = env.str("FILES_S3_SECRET_ACCESS_KEY", default="") or None
# Region of the bucket.
FILES_S3_REGION = env.str("FILES_S3_REGION", default="us-east-1")
# Key prefix of every object in the bucket.
FILES_S3_PREFIX = env.str("FILES_S3_PREFIX", default="files/")
# GET /files/{id}/content answers 302 to a presigned URL instead of streaming through us.
FILES_S3_REDIRECT = env.bool("FILES_S3_REDIRECT", default=False)
# Seconds a presigned download URL stays valid.
FILES_S3_PRESIGN_SECONDS = env.int("FILES_S3_PRESIGN_SECONDS", default=300)

if FILES_STORAGE not in ("local", "s3"):
    raise ImproperlyConfigured(f"FILES_STORAGE must be local or s3, got {FILES_STORAGE!r}")
if FILES_STORAGE == "s3":
    if not FILES_S3_BUCKET:
        raise ImproperlyConfigured("FILES_STORAGE=s3 needs FILES_S3_BUCKET")
    if FILES_CHUNK_BYTES < 5 * MIB:
        raise ImproperlyConfigured("FILES_CHUNK_BYTES must be at least 5 MiB on S3 (multipart part size)")
if not (1 <= FILES_CHUNK_BYTES <= 64 * MIB):
    raise ImproperlyConfigured("FILES_CHUNK_BYTES must be between 1 byte and 64 MiB")
