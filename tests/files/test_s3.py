"""The S3 backend against a real S3-protocol server (moto in server mode on 127.0.0.1):
multipart upload with one part per chunk, streamed and redirected downloads."""

import hashlib

import httpx
import pytest

from files.models import File
from tests.files.conftest import MIB
from tests.files.helpers import chunk_of, content_of, declare, payload, put_chunk, upload
from tests.helpers import assert_error

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")]

SIZE = 2 * 5 * MIB + 123  # two full 5 MiB parts and a short last one


def _object_key(file_id, tenant_id):
    return f"files/{tenant_id}/{file_id}"


def test_multipart_upload_out_of_order_then_ranged_download(auth_api, user, s3_files):
    data = payload(SIZE)
    file = declare(auth_api, data).json()
    chunk = file["chunk_size"]

    assert file["chunk_count"] == 3 and chunk == 5 * MIB
    upload_id = File.objects.get(pk=file["id"]).upload_id
    for index in (2, 0, 1):
        assert put_chunk(auth_api, file["id"], index, chunk_of(data, index, chunk)).status_code == 201
    parts = s3_files.list_parts(Bucket=s3_files.bucket, Key=_object_key(file["id"], user.tenant_id), UploadId=upload_id)
    repeat = put_chunk(auth_api, file["id"], 1, chunk_of(data, 1, chunk))
    conflict = put_chunk(auth_api, file["id"], 1, payload(chunk, seed=7))
    done = auth_api.post(f"/api/v1/files/{file['id']}/complete")
    whole = auth_api.get(f"/api/v1/files/{file['id']}/content")
    middle = auth_api.get(f"/api/v1/files/{file['id']}/content", HTTP_RANGE=f"bytes={chunk - 5}-{chunk + 4}")
    suffix = auth_api.get(f"/api/v1/files/{file['id']}/content", HTTP_RANGE="bytes=-200")

    assert [p["PartNumber"] for p in parts["Parts"]] == [1, 2, 3]
    assert repeat.status_code == 200
    assert_error(conflict, 409, "chunk_conflict")
    assert done.status_code == 200 and done.json()["status"] == "ready"
    stored = s3_files.get_object(Bucket=s3_files.bucket, Key=_object_key(file["id"], user.tenant_id))["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
    assert whole.status_code == 200 and content_of(whole) == data
    assert middle.status_code == 206 and content_of(middle) == data[chunk - 5 : chunk + 5]
    assert middle["Content-Range"] == f"bytes {chunk - 5}-{chunk + 4}/{SIZE}"
    assert suffix.status_code == 206 and content_of(suffix) == data[-200:]


def test_resume_and_checksum_mismatch_on_s3(auth_api, user, s3_files):
    data = payload(5 * MIB + 10)
    file = declare(auth_api, data, sha256="f" * 64).json()
    put_chunk(auth_api, file["id"], 1, chunk_of(data, 1, 5 * MIB))

    early = auth_api.post(f"/api/v1/files/{file['id']}/complete")
    put_chunk(auth_api, file["id"], 0, chunk_of(data, 0, 5 * MIB))
    mismatch = auth_api.post(f"/api/v1/files/{file['id']}/complete")

    assert assert_error(early, 409, "upload_incomplete")["details"]["missing"] == [0]
    assert (
        assert_error(mismatch, 422, "checksum_mismatch")["details"]["actual_sha256"] == hashlib.sha256(data).hexdigest()
    )
    assert File.objects.get(pk=file["id"]).status == "failed"
    listed = s3_files.list_objects_v2(Bucket=s3_files.bucket)
    assert listed.get("KeyCount", 0) == 0  # the completed object was removed
    assert s3_files.list_multipart_uploads(Bucket=s3_files.bucket).get("Uploads", []) == []


def test_download_redirects_to_a_presigned_url(auth_api, s3_files, settings):
    data = payload(100)
    settings.FILES_S3_REDIRECT = True
    done = upload(auth_api, data, filename="résumé.pdf")

    response = auth_api.get(f"/api/v1/files/{done['id']}/content")
    fetched = httpx.get(response["Location"])

    assert response.status_code == 302
    assert "X-Amz-Expires=300" in response["Location"] or "Expires=" in response["Location"]
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["content-disposition"] == "attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf"


def test_purge_aborts_the_multipart_upload(auth_api, s3_files):
    from datetime import timedelta

    from django.utils import timezone

    from files.services import files_purge_stale

    data = payload(5 * MIB + 10)
    file = declare(auth_api, data).json()
    put_chunk(auth_api, file["id"], 0, chunk_of(data, 0, 5 * MIB))
    File.objects.filter(pk=file["id"]).update(expires_at=timezone.now() - timedelta(minutes=1))

    purged = files_purge_stale()

    assert [f.pk for f in purged] == [File.objects.get().pk]
    assert File.objects.get().status == "expired"
    assert s3_files.list_multipart_uploads(Bucket=s3_files.bucket).get("Uploads", []) == []


def test_s3_parts_must_be_5_mib(settings):
    from django.core.exceptions import ImproperlyConfigured

    assert settings.FILES_CHUNK_BYTES >= 1  # the settings module refuses smaller S3 parts at start-up:
    import importlib
    import os

    import config.settings.files as files_settings

    old = dict(os.environ)
    os.environ.update(FILES_STORAGE="s3", FILES_S3_BUCKET="b", FILES_CHUNK_BYTES=str(MIB))
    try:
        with pytest.raises(ImproperlyConfigured, match="at least 5 MiB"):
            importlib.reload(files_settings)
    finally:
        os.environ.clear()
        os.environ.update(old)
        importlib.reload(files_settings)
