"""Django's own client errors keep their status on API paths, in the error envelope."""

import json

import pytest
from django.test import Client

from chat.models import AgentRun
from conversations.models import Conversation, Message
from tests.helpers import assert_envelope

pytestmark = pytest.mark.django_db


def oversized_json(settings) -> str:
    return json.dumps({"message": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1024)})


def test_oversized_json_body_to_chat_is_413_and_stores_nothing(auth_api, settings):
    body = json.dumps({"message": "x" * (3 * 1024 * 1024)})

    response = auth_api.post("/api/v1/chat", body, content_type="application/json")

    assert_envelope(response, 413, "payload_too_large")
    assert Conversation.objects.count() == 0
    assert Message.objects.count() == 0
    assert AgentRun.objects.count() == 0


def test_oversized_json_body_with_idempotency_key_is_413(auth_api, settings):
    response = auth_api.post(
        "/api/v1/chat", oversized_json(settings), content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert_envelope(response, 413, "payload_too_large")
    assert Message.objects.count() == 0


def test_oversized_json_body_to_register_is_413_and_creates_no_account(api, settings):
    from accounts.models import Tenant, User

    response = api.post("/api/v1/auth/register", oversized_json(settings), content_type="application/json")

    assert_envelope(response, 413, "payload_too_large")
    assert User.objects.count() == 0
    assert Tenant.objects.count() == 0


@pytest.mark.urls("tests.ops.urls")
@pytest.mark.parametrize("view", ["plain-raise", "drf-raise"])
@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("not-found", 404, "not_found"),
        ("forbidden", 403, "permission_denied"),
        ("suspicious", 400, "bad_request"),
        ("bad-request", 400, "bad_request"),
    ],
)
def test_django_client_errors_keep_their_status_in_plain_and_drf_views(view, kind, status, code):
    client = Client(raise_request_exception=False)

    response = client.get(f"/api/v1/test/{view}/{kind}")

    assert_envelope(response, status, code)
