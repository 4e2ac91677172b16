"""POST /api/v1/messages/broadcast: one message per target, each with its own conversation
and status; all or nothing on bad input."""

import pytest

from conversations.models import Conversation, Message
from hub.models import ConversationBinding, Delivery
from tests.accounts.factories import TenantFactory, UserFactory
from tests.helpers import assert_error, client_for

from .conftest import connect

pytestmark = pytest.mark.django_db

URL = "/api/v1/messages/broadcast"


def test_broadcast_routes_one_message_per_target(
    auth_api, user, whatsapp, instagram, django_capture_on_commit_callbacks
):
    existing = auth_api.post(
        "/api/v1/conversations/",
        {"channel_account_id": whatsapp.account.pk, "contact": {"address": "111"}},
        format="json",
    ).json()
    targets = [
        {"channel_account_id": whatsapp.account.pk, "address": "111"},
        {"channel_account_id": whatsapp.account.pk, "address": "222"},
        {"channel_account_id": instagram.account.pk, "address": "333"},
    ]

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_api.post(URL, {"content": "Sale today", "targets": targets}, format="json")

    assert response.status_code == 202, response.content
    results = response.json()["results"]
    assert [(r["channel_account_id"], r["address"], r["status"]) for r in results] == [
        (whatsapp.account.pk, "111", "accepted"),
        (whatsapp.account.pk, "222", "accepted"),
        (instagram.account.pk, "333", "accepted"),
    ]
    assert results[0]["conversation_id"] == existing["id"]  # the open conversation is reused
    assert len({r["conversation_id"] for r in results}) == 3
    assert ConversationBinding.objects.count() == 3
    statuses = {m.conversation_id: m.status for m in Message.objects.filter(pk__in=[r["message_id"] for r in results])}
    assert statuses == {
        results[0]["conversation_id"]: "read",  # the whatsapp fixture reports read
        results[1]["conversation_id"]: "read",
        results[2]["conversation_id"]: "delivered",
    }
    assert Delivery.objects.filter(state="sent").count() == 3


@pytest.mark.parametrize(
    "body",
    [
        {"content": "", "targets": [{"channel_account_id": 1, "address": "1"}]},
        {"content": "hi", "targets": []},
        {"content": "hi"},
        {"content": "hi", "targets": [{"channel_account_id": 1}]},
        {"content": "hi", "targets": [{"channel_account_id": 1, "address": "1"}] * 2},
        {"content": "hi", "targets": [{"channel_account_id": 1, "address": str(n)} for n in range(101)]},
    ],
    ids=["blank", "no-targets", "missing-targets", "no-address", "duplicate", "too-many"],
)
def test_bad_broadcasts_are_400_and_store_nothing(auth_api, body):
    assert_error(auth_api.post(URL, body, format="json"), 400, "validation_error")
    assert not Message.objects.exists()


def test_a_foreign_account_is_404_and_nothing_is_sent(auth_api, whatsapp):
    stranger = UserFactory(tenant=TenantFactory(), role="owner")
    foreign = connect(stranger, external_id="15550007777")
    targets = [
        {"channel_account_id": whatsapp.account.pk, "address": "1"},
        {"channel_account_id": foreign.account.pk, "address": "2"},
    ]

    error = assert_error(auth_api.post(URL, {"content": "hi", "targets": targets}, format="json"), 404, "not_found")

    assert error["details"] == {"channel_account_id": foreign.account.pk}
    assert not Message.objects.exists() and not Conversation.objects.exists()


def test_members_may_not_broadcast(tenant, whatsapp):
    member = client_for(UserFactory(tenant=tenant, role="member"))
    body = {"content": "hi", "targets": [{"channel_account_id": whatsapp.account.pk, "address": "1"}]}

    assert_error(member.post(URL, body, format="json"), 403, "permission_denied")
    assert not Message.objects.exists()
