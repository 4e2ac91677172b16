import hashlib

import pytest

from audits.models import AuditRecord
from files.models import File, FileChunk
from tests.accounts.factories import UserFactory
from tests.files.helpers import chunk_of, content_of, declare, payload, put_chunk, upload
from tests.helpers import assert_error, client_for

pytestmark = [
    pytest.mark.django_db,
    # The test client reads the async download stream synchronously (daphne does not).
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume"),
]

CHUNK = 1024  # tests/files/conftest.py


def test_declare_answers_id_chunk_size_and_count(auth_api):
    data = payload(2500)

    response = declare(auth_api, data)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "uploading" and body["size"] == 2500
    assert body["chunk_size"] == CHUNK and body["chunk_count"] == 3 and body["chunks_received"] == []
    assert body["download_path"] is None
    assert File.objects.get(pk=body["id"]).sha256 == hashlib.sha256(data).hexdigest()


def test_multi_chunk_upload_then_download(auth_api, local_files):
    data = payload(3 * CHUNK + 17)

    done = upload(auth_api, data)
    response = auth_api.get(f"/api/v1/files/{done['id']}/content")

    assert done["status"] == "ready" and done["chunks_received"] == [0, 1, 2, 3]
    assert done["download_path"] == f"/api/v1/files/{done['id']}/content"
    assert response.status_code == 200
    assert content_of(response) == data
    assert response["Content-Length"] == str(len(data))
    assert response["Accept-Ranges"] == "bytes"
    assert response["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="report.pdf"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert len([p for p in local_files.rglob("*") if p.is_file()]) == 4  # one stored file per chunk


def test_out_of_order_chunks(auth_api):
    data = payload(3 * CHUNK)
    file = declare(auth_api, data).json()

    for index in (2, 0, 1):
        assert put_chunk(auth_api, file["id"], index, chunk_of(data, index, CHUNK)).status_code == 201
    done = auth_api.post(f"/api/v1/files/{file['id']}/complete")

    assert done.status_code == 200 and done.json()["status"] == "ready"
    assert content_of(auth_api.get(f"/api/v1/files/{file['id']}/content")) == data


def test_a_repeated_chunk_is_accepted_once(auth_api):
    data = payload(2 * CHUNK)
    file = declare(auth_api, data).json()

    first = put_chunk(auth_api, file["id"], 0, data[:CHUNK])
    again = put_chunk(auth_api, file["id"], 0, data[:CHUNK])

    assert first.status_code == 201 and first.json()["created"] is True
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["sha256"] == hashlib.sha256(data[:CHUNK]).hexdigest()
    assert FileChunk.objects.filter(file_id=file["id"]).count() == 1


def test_a_conflicting_chunk_is_409_and_keeps_the_stored_one(auth_api):
    data = payload(2 * CHUNK)
    file = declare(auth_api, data).json()
    put_chunk(auth_api, file["id"], 0, data[:CHUNK])

    response = put_chunk(auth_api, file["id"], 0, payload(CHUNK, seed=9))

    error = assert_error(response, 409, "chunk_conflict")
    assert error["details"]["index"] == 0
    assert FileChunk.objects.get(file_id=file["id"], index=0).sha256 == hashlib.sha256(data[:CHUNK]).hexdigest()


def test_resume_after_a_missing_chunk(auth_api):
    data = payload(3 * CHUNK)
    file = declare(auth_api, data).json()
    put_chunk(auth_api, file["id"], 0, chunk_of(data, 0, CHUNK))
    put_chunk(auth_api, file["id"], 2, chunk_of(data, 2, CHUNK))

    early = auth_api.post(f"/api/v1/files/{file['id']}/complete")
    shown = auth_api.get(f"/api/v1/files/{file['id']}")
    put_chunk(auth_api, file["id"], 1, chunk_of(data, 1, CHUNK))
    done = auth_api.post(f"/api/v1/files/{file['id']}/complete")

    error = assert_error(early, 409, "upload_incomplete")
    assert error["details"]["missing"] == [1]
    assert shown.json()["chunks_received"] == [0, 2] and shown.json()["status"] == "uploading"
    assert done.status_code == 200 and done.json()["status"] == "ready"
    assert content_of(auth_api.get(f"/api/v1/files/{file['id']}/content")) == data


def test_checksum_mismatch_is_422_and_the_file_failed(auth_api, local_files):
    data = payload(2 * CHUNK)
    file = declare(auth_api, data, sha256="0" * 64).json()
    for index in range(2):
        put_chunk(auth_api, file["id"], index, chunk_of(data, index, CHUNK))

    response = auth_api.post(f"/api/v1/files/{file['id']}/complete")

    error = assert_error(response, 422, "checksum_mismatch")
    assert error["details"]["actual_sha256"] == hashlib.sha256(data).hexdigest()
    assert File.objects.get(pk=file["id"]).status == "failed"
    assert not FileChunk.objects.filter(file_id=file["id"]).exists()
    assert [p for p in local_files.rglob("*") if p.is_file()] == []
    assert_error(auth_api.get(f"/api/v1/files/{file['id']}/content"), 409, "file_not_ready")
    assert_error(put_chunk(auth_api, file["id"], 0, data[:CHUNK]), 409, "file_not_uploading")
    assert AuditRecord.objects.filter(action="file.failed", resource_id=file["id"]).count() == 1


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=100-1199", 100, 1199),
        ("bytes=2000-", 2000, 2499),
        ("bytes=-300", 2200, 2499),
        ("bytes=2400-9999", 2400, 2499),
    ],
)
def test_range_download(auth_api, header, start, end):
    data = payload(2500)
    done = upload(auth_api, data)

    response = auth_api.get(f"/api/v1/files/{done['id']}/content", HTTP_RANGE=header)

    assert response.status_code == 206
    assert content_of(response) == data[start : end + 1]
    assert response["Content-Range"] == f"bytes {start}-{end}/2500"
    assert response["Content-Length"] == str(end - start + 1)


def test_unsatisfiable_range_is_416(auth_api):
    done = upload(auth_api, payload(100))

    response = auth_api.get(f"/api/v1/files/{done['id']}/content", HTTP_RANGE="bytes=100-")

    assert_error(response, 416, "range_not_satisfiable")
    assert response["Content-Range"] == "bytes */100"


def test_malformed_range_or_stale_if_range_sends_the_whole_file(auth_api):
    data = payload(100)
    done = upload(auth_api, data)
    path = f"/api/v1/files/{done['id']}/content"

    malformed = auth_api.get(path, HTTP_RANGE="bytes=5-1,7-9")
    stale = auth_api.get(path, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"other"')
    fresh = auth_api.get(path, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE=f'"{done["sha256"]}"')
    cached = auth_api.get(path, HTTP_IF_NONE_MATCH=f'"{done["sha256"]}"')

    assert malformed.status_code == 200 and content_of(malformed) == data
    assert stale.status_code == 200 and content_of(stale) == data
    assert fresh.status_code == 206 and content_of(fresh) == data[:10]
    assert cached.status_code == 304


def test_content_disposition_is_safe_for_any_name(auth_api):
    done = upload(auth_api, payload(10), filename='../../etc/"évil"\r\n.pdf')

    response = auth_api.get(f"/api/v1/files/{done['id']}/content")

    assert done["filename"] == '"évil".pdf'
    disposition = response["Content-Disposition"]
    assert disposition == "attachment; filename*=utf-8''%22%C3%A9vil%22.pdf"
    assert "\r" not in disposition and "\n" not in disposition


def test_another_tenants_file_is_404(auth_api, other_tenant_api):
    data = payload(CHUNK)
    file = declare(auth_api, data).json()
    put_chunk(auth_api, file["id"], 0, data)
    auth_api.post(f"/api/v1/files/{file['id']}/complete")
    path = f"/api/v1/files/{file['id']}"

    assert_error(other_tenant_api.get(path), 404, "not_found")
    assert_error(other_tenant_api.get(f"{path}/content"), 404, "not_found")
    assert_error(put_chunk(other_tenant_api, file["id"], 0, data), 404, "not_found")
    assert_error(other_tenant_api.post(f"{path}/complete"), 404, "not_found")
    assert_error(other_tenant_api.delete(path), 404, "not_found")
    assert other_tenant_api.get("/api/v1/files/").json()["results"] == []
    assert File.objects.filter(pk=file["id"], status="ready").exists()


def test_another_member_of_the_tenant_reads_but_cannot_write(auth_api, user):
    data = payload(2 * CHUNK)
    file = declare(auth_api, data).json()
    member = client_for(UserFactory(tenant=user.tenant, role="member"))

    shown = member.get(f"/api/v1/files/{file['id']}")
    refused = put_chunk(member, file["id"], 0, data[:CHUNK])

    assert shown.status_code == 200
    assert_error(refused, 403, "permission_denied")
    assert not FileChunk.objects.exists()


def test_over_size_declaration_is_413(auth_api, settings):
    settings.FILES_MAX_BYTES = 5000

    response = declare(auth_api, b"", size=5001, sha256="a" * 64)

    assert_error(response, 413, "file_too_large")
    assert not File.objects.exists()


def test_default_limit_is_2_gib(auth_api, settings):
    assert settings.FILES_MAX_BYTES == 2 * 1024**3
    assert_error(declare(auth_api, b"", size=2 * 1024**3 + 1, sha256="a" * 64), 413, "file_too_large")


def test_quota_is_413(auth_api, settings):
    settings.FILES_TENANT_QUOTA_BYTES = 3000
    assert declare(auth_api, payload(2000)).status_code == 201

    response = declare(auth_api, payload(1001))

    assert_error(response, 413, "quota_exceeded")
    assert File.objects.count() == 1


def test_content_type_not_allowed_is_415(auth_api):
    response = declare(auth_api, payload(10), content_type="application/x-msdownload")

    assert_error(response, 415, "unsupported_media_type")
    assert not File.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"filename": "a.pdf", "size": 0, "content_type": "application/pdf", "sha256": "a" * 64},
        {"filename": "a.pdf", "size": 10, "content_type": "application/pdf", "sha256": "xyz"},
        {"filename": "", "size": 10, "content_type": "application/pdf", "sha256": "a" * 64},
        {"filename": "/", "size": 10, "content_type": "application/pdf", "sha256": "a" * 64},
        {"filename": "a.pdf", "size": "ten", "content_type": "application/pdf", "sha256": "a" * 64},
        {"size": 10, "content_type": "application/pdf", "sha256": "a" * 64},
    ],
)
def test_bad_declarations_are_400(auth_api, body):
    response = auth_api.post("/api/v1/files", body, format="json")

    assert_error(response, 400, "validation_error")
    assert not File.objects.exists()


def test_chunk_of_the_wrong_size_or_index(auth_api):
    data = payload(CHUNK + 10)
    file = declare(auth_api, data).json()

    too_big = put_chunk(auth_api, file["id"], 0, data[:CHUNK] + b"x")
    too_small = put_chunk(auth_api, file["id"], 0, data[: CHUNK - 1])
    last_too_big = put_chunk(auth_api, file["id"], 1, data[CHUNK:] + b"x")
    out_of_range = put_chunk(auth_api, file["id"], 2, b"x")

    assert_error(too_big, 413, "chunk_too_large")
    assert_error(too_small, 400, "chunk_size_mismatch")
    assert_error(last_too_big, 413, "chunk_too_large")
    assert_error(out_of_range, 400, "chunk_index_out_of_range")
    assert not FileChunk.objects.exists()


def test_a_chunk_larger_than_djangos_body_limit_streams(auth_api, settings):
    """Django refuses bodies over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) when read whole; a
    chunk is read in pieces, so an 8 MiB chunk is fine."""
    settings.FILES_CHUNK_BYTES = 8 * 1024 * 1024
    data = payload(8 * 1024 * 1024 + 5)

    done = upload(auth_api, data)

    assert done["chunk_count"] == 2
    assert content_of(auth_api.get(f"/api/v1/files/{done['id']}/content", HTTP_RANGE="bytes=-10")) == data[-10:]


def test_download_of_an_unfinished_file_is_409(auth_api):
    file = declare(auth_api, payload(10)).json()

    assert_error(auth_api.get(f"/api/v1/files/{file['id']}/content"), 409, "file_not_ready")


def test_complete_twice_returns_the_ready_file(auth_api):
    done = upload(auth_api, payload(10))

    again = auth_api.post(f"/api/v1/files/{done['id']}/complete")

    assert again.status_code == 200 and again.json()["status"] == "ready"
    assert AuditRecord.objects.filter(action="file.completed", resource_id=done["id"]).count() == 1


def test_unauthenticated_is_401(api):
    assert_error(api.get("/api/v1/files/"), 401, "not_authenticated")
    assert_error(api.post("/api/v1/files/", {}, format="json"), 401, "not_authenticated")


def test_unknown_file_is_404(auth_api):
    assert_error(auth_api.get("/api/v1/files/00000000-0000-0000-0000-000000000000"), 404, "not_found")


def test_declaration_is_idempotent_with_a_key(auth_api):
    data = payload(10)
    headers = {"HTTP_IDEMPOTENCY_KEY": "upload-1"}
    body = {
        "filename": "a.pdf",
        "size": 10,
        "content_type": "application/pdf",
        "sha256": hashlib.sha256(data).hexdigest(),
    }

    first = auth_api.post("/api/v1/files/", body, format="json", **headers)
    replay = auth_api.post("/api/v1/files/", body, format="json", **headers)

    assert first.status_code == 201 and replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true" and replay.json()["id"] == first.json()["id"]
    assert File.objects.count() == 1


def test_uploads_and_downloads_are_audited(auth_api, user):
    done = upload(auth_api, payload(10))
    auth_api.get(f"/api/v1/files/{done['id']}/content", HTTP_RANGE="bytes=0-4")

    actions = list(
        AuditRecord.objects.filter(resource_type="file", resource_id=done["id"])
        .order_by("id")
        .values_list("action", flat=True)
    )

    assert actions == ["file.created", "file.completed", "file.downloaded"]
    downloaded = AuditRecord.objects.get(action="file.downloaded")
    assert downloaded.actor_id == user.id and downloaded.details == {"start": 0, "end": 4, "redirected": False}


def test_delete_removes_the_bytes(auth_api, local_files):
    done = upload(auth_api, payload(3000))

    response = auth_api.delete(f"/api/v1/files/{done['id']}")

    assert response.status_code == 204
    assert not File.objects.exists() and not FileChunk.objects.exists()
    assert [p for p in local_files.rglob("*") if p.is_file()] == []


def test_list_shows_the_tenants_files(auth_api, django_assert_max_num_queries):
    upload(auth_api, payload(10))
    declare(auth_api, payload(3000))

    with django_assert_max_num_queries(8):
        response = auth_api.get("/api/v1/files/")

    results = response.json()["results"]
    assert [f["status"] for f in results] == ["uploading", "ready"]
