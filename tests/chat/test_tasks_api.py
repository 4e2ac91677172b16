import pytest

from audits.models import AuditRecord
from chat.models import Task
from tests.accounts.factories import UserFactory
from tests.helpers import assert_error, client_for

pytestmark = pytest.mark.django_db


def test_task_crud(auth_api, user):
    created = auth_api.post("/api/v1/tasks", {"title": "buy milk"}, format="json")
    task_id = created.json()["id"]

    listed = auth_api.get("/api/v1/tasks").json()
    patched = auth_api.patch(f"/api/v1/tasks/{task_id}/", {"completed": True}, format="json")
    pending = auth_api.get("/api/v1/tasks?status=pending").json()
    deleted = auth_api.delete(f"/api/v1/tasks/{task_id}")

    assert created.status_code == 201 and created.json()["title"] == "buy milk"
    assert [t["id"] for t in listed["results"]] == [task_id]
    assert patched.json()["completed"] is True and patched.json()["completed_at"]
    assert pending["results"] == []
    assert deleted.status_code == 204
    assert not Task.objects.exists()


def test_blank_title_is_400(auth_api):
    assert_error(auth_api.post("/api/v1/tasks", {"title": "  "}, format="json"), 400, "validation_error")
    assert not Task.objects.exists()


def test_someone_elses_task_is_404(auth_api, user):
    colleague = UserFactory(tenant=user.tenant)
    theirs = client_for(colleague).post("/api/v1/tasks", {"title": "private"}, format="json").json()["id"]

    assert_error(auth_api.get(f"/api/v1/tasks/{theirs}"), 404, "not_found")
    assert_error(auth_api.delete(f"/api/v1/tasks/{theirs}"), 404, "not_found")
    assert Task.objects.filter(pk=theirs).exists()


def test_create_completed_task_is_one_write_and_one_audit_record(auth_api, user):
    response = auth_api.post("/api/v1/tasks", {"title": "x", "completed": True}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["completed"] is True and body["completed_at"]
    records = AuditRecord.objects.filter(resource_type="task", resource_id=str(body["id"]))
    assert [r.action for r in records] == ["task.created"]
    assert records[0].details == {"title": "x", "completed": True}


def test_create_without_title_is_400(auth_api):
    error = assert_error(auth_api.post("/api/v1/tasks", {"completed": True}, format="json"), 400, "validation_error")

    assert "title" in error["details"]
    assert not Task.objects.exists()


def test_put_replaces_so_it_needs_a_title_and_patch_does_not(auth_api, user):
    task_id = auth_api.post("/api/v1/tasks", {"title": "keep"}, format="json").json()["id"]

    put = auth_api.put(f"/api/v1/tasks/{task_id}", {"completed": True}, format="json")
    patched = auth_api.patch(f"/api/v1/tasks/{task_id}", {"completed": True}, format="json")
    replaced = auth_api.put(f"/api/v1/tasks/{task_id}", {"title": "new", "completed": False}, format="json")

    error = assert_error(put, 400, "validation_error")
    assert "title" in error["details"]
    assert patched.status_code == 200 and patched.json()["title"] == "keep"
    assert replaced.status_code == 200 and (replaced.json()["title"], replaced.json()["completed"]) == ("new", False)
