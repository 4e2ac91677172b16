"""Agent runs in the admin: read-only records; a failed turn is re-queued as a new run."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audits.models import AuditRecord
from chat.models import AgentRun
from tests.chat.factories import AgentRunFactory, TaskFactory

pytestmark = pytest.mark.django_db

RUNS = "/admin/chat/agentrun/"


def test_retry_action_answers_a_failed_turn_with_a_new_audited_run(
    admin_client, staff, django_capture_on_commit_callbacks
):
    failed = AgentRunFactory(status=AgentRun.Status.FAILED, error="provider down")
    completed = AgentRunFactory(status=AgentRun.Status.COMPLETED)

    with django_capture_on_commit_callbacks(execute=True):  # the worker runs eagerly in tests
        response = admin_client.post(
            RUNS, {"action": "retry_failed_runs", "_selected_action": [failed.pk, completed.pk]}
        )

    assert response.status_code == 302, response.content
    retry = AgentRun.objects.get(trigger_message=failed.trigger_message, pk__gt=failed.pk)
    assert retry.status == AgentRun.Status.COMPLETED and retry.reply_message is not None  # the local agent answered
    failed.refresh_from_db()
    assert failed.status == AgentRun.Status.FAILED  # its history stays
    assert AgentRun.objects.filter(trigger_message=completed.trigger_message).count() == 1
    record = AuditRecord.objects.get(action="run.retried")
    assert (record.tenant_id, record.actor_id, record.resource_id) == (failed.tenant_id, staff.pk, str(retry.pk))
    assert record.details == {"failed_run_id": failed.pk, "conversation_id": failed.conversation_id, "via": "admin"}


def test_a_failed_run_is_retried_once(admin_client, django_capture_on_commit_callbacks):
    failed = AgentRunFactory(status=AgentRun.Status.FAILED)

    with django_capture_on_commit_callbacks(execute=False):
        for _ in range(2):
            admin_client.post(RUNS, {"action": "retry_failed_runs", "_selected_action": [failed.pk]})

    assert AgentRun.objects.filter(trigger_message=failed.trigger_message).count() == 2
    assert AuditRecord.objects.filter(action="run.retried").count() == 1


def test_runs_and_tasks_are_read_only_in_the_admin(admin_client):
    run = AgentRunFactory(status=AgentRun.Status.FAILED)
    task = TaskFactory(title="buy milk")

    run_edit = admin_client.post(f"{RUNS}{run.pk}/change/", {"status": "completed"})
    task_edit = admin_client.post(f"/admin/chat/task/{task.pk}/change/", {"title": "x", "owner": "1", "tenant": "1"})
    task_delete = admin_client.post(f"/admin/chat/task/{task.pk}/delete/", {"post": "yes"})

    assert (run_edit.status_code, task_edit.status_code, task_delete.status_code) == (403, 403, 403)
    run.refresh_from_db()
    task.refresh_from_db()
    assert run.status == "failed" and task.title == "buy milk"


def test_run_list_shows_status_provider_latency_error_attempts_without_n_plus_1(admin_client):
    def page_queries():
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(RUNS)
        assert response.status_code == 200
        return len(queries), response.content.decode()

    AgentRunFactory(status=AgentRun.Status.FAILED, error="upstream 503", latency_ms=1234, attempts=3)
    few, body = page_queries()
    for _ in range(8):
        AgentRunFactory()
    many, _ = page_queries()

    assert "upstream 503" in body and "1234" in body and "local" in body
    assert many == few
