from rest_framework import serializers

from config.api.fields import StrictCharField

from .models import File


class FileCreateSerializer(serializers.Serializer):
    filename = StrictCharField(max_length=1000)
    size = serializers.IntegerField(min_value=1, max_value=2**62)
    content_type = StrictCharField(max_length=255)
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", max_length=64)


class FileSerializer(serializers.ModelSerializer):
    """A file as the API shows it: what was declared, how to upload it, how far it got."""

    chunks_received = serializers.SerializerMethodField()
    download_path = serializers.SerializerMethodField()
    owner_id = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = File
        fields = [
            "id",
            "filename",
            "content_type",
            "size",
            "sha256",
            "status",
            "chunk_size",
            "chunk_count",
            "chunks_received",
            "owner_id",
            "download_path",
            "created_at",
            "completed_at",
            "expires_at",
        ]
        read_only_fields = fields

    def get_chunks_received(self, file) -> list[int]:
        """Indexes of the chunks stored so far (a client resumes with the others).
        Selectors prefetch them (``file_list``/``file_get``), so a page costs one query."""
        if file.status == File.Status.READY:
            return list(range(file.chunk_count))
        if file.status != File.Status.UPLOADING:
            return []
        return sorted(chunk.index for chunk in file.chunks.all() if chunk.sha256)

    def get_download_path(self, file) -> str | None:
        return f"/api/v1/files/{file.pk}/content" if file.status == File.Status.READY else None


class ChunkSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    created = serializers.BooleanField()
