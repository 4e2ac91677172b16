import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import TenantQuerySet


class File(models.Model):
    """One uploaded file: declared first (name, size, type, sha256), then filled chunk by
    chunk, then completed (size and sha256 verified) and ``ready``. Its bytes live in the
    backend named by ``backend``, never in the database."""

    class Status(models.TextChoices):
        UPLOADING = "uploading", "Uploading"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"

    class Backend(models.TextChoices):
        LOCAL = "local", "Local folder"
        S3 = "s3", "S3-compatible"

    # Opaque and unguessable: it is also the storage key, and appears in download paths.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="files")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="files")
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    chunk_size = models.IntegerField()
    chunk_count = models.IntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UPLOADING)
    backend = models.CharField(max_length=10, choices=Backend.choices)
    # Object key of the whole file (S3); the local backend keeps the chunks as the file.
    storage_key = models.CharField(max_length=500, blank=True, default="")
    # S3 multipart upload id while uploading.
    upload_id = models.CharField(max_length=1024, blank=True, default="")
    error = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # An upload with no new chunk until then expires (purge_stale_uploads).
    expires_at = models.DateTimeField()

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "status"]),
            models.Index(fields=["status", "expires_at"]),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(size__gte=1), name="file_size_positive"),
            models.CheckConstraint(condition=models.Q(chunk_count__gte=1), name="file_chunk_count_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.filename} ({self.pk})"

    def chunk_length(self, index: int) -> int:
        """Bytes chunk ``index`` must carry: ``chunk_size``, the last one the rest."""
        if index == self.chunk_count - 1:
            return self.size - self.chunk_size * (self.chunk_count - 1)
        return self.chunk_size


class FileChunk(models.Model):
    """One chunk of a file being uploaded. A row with an empty ``sha256`` is a chunk being
    written (claimed by one request); a stored chunk never changes."""

    file = models.ForeignKey(File, on_delete=models.CASCADE, related_name="chunks")
    index = models.IntegerField()
    size = models.IntegerField()
    sha256 = models.CharField(max_length=64, blank=True, default="")
    # S3 part ETag (completes the multipart upload) / local storage name of the chunk.
    etag = models.CharField(max_length=200, blank=True, default="")
    storage_name = models.CharField(max_length=500, blank=True, default="")
    claimed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["file", "index"]
        constraints = [
            models.UniqueConstraint(fields=["file", "index"], name="file_chunk_unique_index"),
        ]

    def __str__(self) -> str:
        return f"{self.file_id} #{self.index}"

    @property
    def stored(self) -> bool:
        return bool(self.sha256)
