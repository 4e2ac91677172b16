import io
import re

import pytest
from django.core.management import call_command
from django.test import Client
from prometheus_client import REGISTRY

from tests.accounts.factories import TenantFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_health_answers_without_dependencies(api):
    response = api.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_reports_every_dependency_ok(api):
    response = api.get("/health/ready/")

    assert response.status_code == 200, response.content
    assert set(response.json()["checks"]) == {"database", "cache", "broker", "channel_layer"}
    assert all(check["status"] == "ok" for check in response.json()["checks"].values())


def test_ready_is_503_when_the_cache_is_down(api, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }

    response = api.get("/health/ready")

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "dependency_unavailable"
    assert error["details"]["checks"]["cache"]["status"] == "error"
    assert error["details"]["checks"]["database"]["status"] == "ok"
    assert error["details"]["unavailable"] == ["redis"]
    assert int(response["Retry-After"]) >= 1


def test_ready_is_503_when_the_channel_layer_is_down(api, settings):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}
    }

    response = api.get("/health/ready")

    assert response.status_code == 503
    assert response.json()["error"]["details"]["checks"]["channel_layer"]["status"] == "error"
    assert response.json()["error"]["details"]["unavailable"] == ["redis"]


def test_ready_is_503_when_the_broker_is_down(api):
    from config.celery import app

    old = (app.conf.task_always_eager, app.conf.broker_url)
    app.conf.task_always_eager, app.conf.broker_url = False, "redis://127.0.0.1:1/0"
    try:
        response = api.get("/health/ready")
    finally:
        app.conf.task_always_eager, app.conf.broker_url = old

    assert response.status_code == 503
    assert response.json()["error"]["details"]["checks"]["broker"]["status"] == "error"


def test_metrics_are_prometheus_text_and_count_requests(api):
    labels = {"method": "GET", "route": "/health", "status": "200"}
    before = REGISTRY.get_sample_value("http_requests_total", labels) or 0.0
    api.get("/health")

    response = api.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert REGISTRY.get_sample_value("http_requests_total", labels) == before + 1
    text = response.content.decode()
    line = re.search(r'^http_requests_total\{method="GET",route="/health",status="200"\} (\S+)$', text, re.M)
    assert line and float(line.group(1)) == before + 1, text[:2000]


def test_metrics_token_is_enforced_when_set(api, settings):
    settings.METRICS_TOKEN = "s3cret"

    refused = api.get("/metrics")
    served = api.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")

    assert refused.status_code == 401 and b"http_requests_total" not in refused.content
    assert served.status_code == 200 and b"http_requests_total" in served.content


@pytest.mark.urls("tests.ops.urls")
def test_unhandled_error_in_drf_view_is_500_envelope_without_internals(api):
    response = api.get("/api/v1/test/boom")

    assert response.status_code == 500
    body = response.json()
    assert body["error"]["code"] == "internal_error"
    assert "secret" not in response.content.decode()


@pytest.mark.urls("tests.ops.urls")
def test_unhandled_error_in_plain_view_is_500_envelope():
    client = Client(raise_request_exception=False)

    response = client.get("/api/v1/test/plain-boom")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "another secret" not in response.content.decode()


def test_schema_generates_without_warnings():
    out = io.StringIO()

    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)

    assert "/api/v1/auth/register" in out.getvalue()


def test_schema_and_docs_are_served(api):
    assert api.get("/api/schema/").status_code == 200
    docs = api.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


def test_admin_lists_tenants_and_users_for_staff():
    staff = UserFactory(is_staff=True, is_superuser=True, tenant=TenantFactory(name="Acme"))
    client = Client()
    client.force_login(staff)

    tenants = client.get("/admin/accounts/tenant/")
    users = client.get("/admin/accounts/user/")

    assert tenants.status_code == 200 and b"Acme" in tenants.content
    assert users.status_code == 200 and staff.email.encode() in users.content


def test_createsuperuser_gets_an_operators_tenant():
    from accounts.models import User

    admin = User.objects.create_superuser("root@example.com", "a-long-admin-passphrase")

    assert admin.is_staff and admin.tenant.slug == "operators"


def test_chat_page_is_served_at_root():
    response = Client().get("/")

    assert response.status_code == 200
    assert b"/ws/v1/conversations/" in response.content and b"/api/v1/auth/token" in response.content


def test_request_log_line_carries_request_id_tenant_and_user(auth_api, user, caplog):
    caplog.set_level("INFO", logger="http.request")

    auth_api.get("/api/v1/auth/me", HTTP_X_REQUEST_ID="req-42")

    (record,) = [r for r in caplog.records if r.name == "http.request"]
    assert (record.request_id, record.tenant_id, record.user_id) == ("req-42", user.tenant_id, user.id)
    assert (record.method, record.path, record.status, record.route) == (
        "GET",
        "/api/v1/auth/me",
        200,
        "/api/v1/auth/me",
    )
    assert record.duration_ms >= 0


def test_log_lines_are_json_with_the_request_id():
    import json
    import logging

    from pythonjsonlogger.json import JsonFormatter

    from config.api.logging import RequestContextFilter
    from config.core.context import request_id_var

    token = request_id_var.set("abc")
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
        RequestContextFilter().filter(record)
        line = JsonFormatter("%(levelname)s %(message)s").format(record)
    finally:
        request_id_var.reset(token)

    assert json.loads(line) == {
        "levelname": "INFO",
        "message": "hello",
        "request_id": "abc",
        "tenant_id": None,
        "user_id": None,
    }


def test_admin_shows_conversations_with_messages_and_runs(django_assert_max_num_queries):
    from chat.services.turns import turn_answer

    staff = UserFactory(is_staff=True, is_superuser=True)
    member = UserFactory()
    turns = [turn_answer(user=member, content=f"add a task to item {i}") for i in range(5)]
    client = Client()
    client.force_login(staff)

    with django_assert_max_num_queries(12):
        conversations = client.get("/admin/conversations/conversation/")
    detail = client.get(f"/admin/conversations/conversation/{turns[0].conversation.pk}/change/")
    runs = client.get("/admin/chat/agentrun/")

    assert conversations.status_code == 200 and b"add a task to item 4" in conversations.content
    assert detail.status_code == 200 and "Added “item 0” to your tasks.".encode() in detail.content
    assert runs.status_code == 200 and b"local-task-assistant" in runs.content


def test_schema_documents_the_error_envelope_and_error_statuses(api):
    schema = api.get("/api/schema/?format=json", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    envelope = schema["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["properties"]["error"]["required"] == ["code", "message", "details", "request_id"]

    retrieve = schema["paths"]["/api/v1/conversations/{id}/"]["get"]["responses"]
    assert {"200", "401", "403", "404", "429"} <= set(retrieve)
    assert retrieve["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}
    create = schema["paths"]["/api/v1/conversations/"]["post"]["responses"]
    assert {"201", "400", "401", "409", "413", "422", "429"} <= set(create)
    assert "403" not in schema["paths"]["/api/v1/auth/register/"]["post"]["responses"]
    listing = schema["paths"]["/api/v1/conversations/"]["get"]["responses"]
    assert "400" in listing and "404" not in listing  # a forged cursor is 400 invalid_cursor
    assert "404" in schema["paths"]["/api/v1/chat/"]["post"]["responses"]  # an unknown conversation_id
