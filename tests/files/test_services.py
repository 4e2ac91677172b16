from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from audits.models import AuditRecord
from files import services
from files.models import File, FileChunk
from files.tasks import purge_stale_uploads
from tests.files.helpers import chunk_of, declare, payload, put_chunk, upload
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db


def _stale_upload(client, local_files, hours=25):
    data = payload(3000)
    file = declare(client, data).json()
    put_chunk(client, file["id"], 0, chunk_of(data, 0, 1024))
    File.objects.filter(pk=file["id"]).update(expires_at=timezone.now() - timedelta(hours=hours - 24))
    return file


def test_purge_dry_run_lists_and_changes_nothing(auth_api, local_files, capsys):
    file = _stale_upload(auth_api, local_files)

    call_command("purge_stale_uploads", "--dry-run")

    out = capsys.readouterr().out
    assert f"would purge {file['id']}" in out and "would purge 1 upload(s)" in out
    assert File.objects.get(pk=file["id"]).status == "uploading"
    assert FileChunk.objects.filter(file_id=file["id"]).count() == 1


def test_purge_expires_abandoned_uploads_and_removes_their_chunks(auth_api, local_files, capsys):
    stale = _stale_upload(auth_api, local_files)
    fresh = declare(auth_api, payload(10)).json()
    ready = upload(auth_api, payload(10))

    call_command("purge_stale_uploads")

    assert "purged 1 upload(s)" in capsys.readouterr().out
    assert File.objects.get(pk=stale["id"]).status == "expired"
    assert not FileChunk.objects.filter(file_id=stale["id"]).exists()
    assert not any(stale["id"] in str(p) for p in local_files.rglob("*") if p.is_file())
    assert File.objects.get(pk=fresh["id"]).status == "uploading"
    assert File.objects.get(pk=ready["id"]).status == "ready"
    assert AuditRecord.objects.filter(action="file.expired", resource_id=stale["id"], actor=None).count() == 1
    assert_error(put_chunk(auth_api, stale["id"], 1, b"x" * 1024), 409, "file_not_uploading")


def test_purge_task_for_beat(auth_api, local_files, settings):
    _stale_upload(auth_api, local_files)

    assert purge_stale_uploads.delay().get() == 1
    assert settings.CELERY_BEAT_SCHEDULE["purge-stale-uploads"]["task"] == "files.tasks.purge_stale_uploads"


def test_a_chunk_put_pushes_the_expiry_back(auth_api):
    data = payload(2048)
    file = declare(auth_api, data).json()
    File.objects.filter(pk=file["id"]).update(expires_at=timezone.now() + timedelta(minutes=1))

    put_chunk(auth_api, file["id"], 0, data[:1024])

    assert File.objects.get(pk=file["id"]).expires_at > timezone.now() + timedelta(hours=23)


def test_a_chunk_being_written_is_409_until_its_claim_is_stale(auth_api, settings):
    data = payload(2048)
    file = declare(auth_api, data).json()
    claim = FileChunk.objects.create(file_id=file["id"], index=0, size=1024)

    busy = put_chunk(auth_api, file["id"], 0, data[:1024])
    FileChunk.objects.filter(pk=claim.pk).update(claimed_at=timezone.now() - timedelta(seconds=301))
    taken_over = put_chunk(auth_api, file["id"], 0, data[:1024])

    assert_error(busy, 409, "chunk_in_progress")
    assert taken_over.status_code == 201
    assert FileChunk.objects.get(pk=claim.pk).sha256 == taken_over.json()["sha256"]


def test_a_body_shorter_than_its_content_length_stores_nothing(user, local_files):
    import io

    data = payload(2048)
    file = services.file_create(
        user=user, filename="a.bin", size=2048, content_type="application/octet-stream", sha256="a" * 64
    )

    with pytest.raises(services.FileError) as raised:
        services.file_chunk_put(file=file, user=user, index=0, stream=io.BytesIO(data[:500]), length=1024)

    assert raised.value.code == "chunk_size_mismatch" and raised.value.details["received_bytes"] == 500
    assert not FileChunk.objects.exists()
    assert [p for p in local_files.rglob("*") if p.is_file()] == []


def test_filenames_are_cleaned():
    assert services.clean_filename("C:\\Users\\me\\photo.jpg") == "photo.jpg"
    assert services.clean_filename("a\x00b\u202e.txt") == "ab.txt"
    assert len(services.clean_filename("x" * 300 + ".pdf")) == 255
    assert services.clean_filename("x" * 300 + ".pdf").endswith(".pdf")


class _BrokenBody:
    """A request body whose client goes away after ``after`` bytes."""

    def __init__(self, data: bytes, after: int):
        self.data, self.after, self.pos = data, after, 0

    def read(self, size: int) -> bytes:
        if self.pos >= self.after:
            raise OSError("client disconnected")
        piece = self.data[self.pos : min(self.pos + size, self.after)]
        self.pos += len(piece)
        return piece


def test_a_body_that_breaks_off_leaves_no_partial_chunk(user, local_files, settings):
    settings.FILES_CHUNK_BYTES = 1024 * 1024
    data = payload(1024 * 1024)
    file = services.file_create(
        user=user, filename="a.bin", size=len(data), content_type="application/pdf", sha256="a" * 64
    )

    with pytest.raises(OSError):
        services.file_chunk_put(file=file, user=user, index=0, stream=_BrokenBody(data, 600 * 1024), length=len(data))

    assert not FileChunk.objects.exists()
    assert [p for p in local_files.rglob("*") if p.is_file()] == []
