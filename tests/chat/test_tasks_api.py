import pytest

from chat.models import Task
from tests.accounts.factories import UserFactory
from tests.accounts.test_apis import assert_error
from tests.conftest import client_for

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
