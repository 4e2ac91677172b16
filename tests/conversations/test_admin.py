"""Writes through the admin are audited like any other: through the real admin pages, as a
staff user, the record lands on the conversation's tenant chain with the staff actor."""

import json

import pytest

from audits.models import AuditChain, AuditRecord
from audits.selectors import audit_chain_verify
from conversations.models import Conversation, Message
from tests.accounts.factories import TenantFactory, UserFactory
from tests.conftest import ADMIN_IP, ADMIN_REQUEST_ID
from tests.conversations.factories import ConversationFactory, add_messages

pytestmark = pytest.mark.django_db


@pytest.fixture
def conversation(db):
    conversation = ConversationFactory(title="Before")
    add_messages(conversation, 2)
    return conversation


def change_form(conversation, **fields):
    messages = list(conversation.messages.order_by("seq"))
    data = {
        "title": conversation.title,
        "status": conversation.status,
        "metadata": json.dumps(conversation.metadata),
        "messages-TOTAL_FORMS": str(len(messages)),
        "messages-INITIAL_FORMS": str(len(messages)),
        "messages-MIN_NUM_FORMS": "0",
        "messages-MAX_NUM_FORMS": "1000",
        # The conversation's runs (chat adds them to the page), read-only, none here.
        "runs-TOTAL_FORMS": "0",
        "runs-INITIAL_FORMS": "0",
        "runs-MIN_NUM_FORMS": "0",
        "runs-MAX_NUM_FORMS": "1000",
        "participants": [str(pk) for pk in conversation.participants.values_list("pk", flat=True)],
    }
    for i, message in enumerate(messages):
        data[f"messages-{i}-id"] = str(message.pk)
        data[f"messages-{i}-conversation"] = str(conversation.pk)
    data.update(fields)
    return data


def the_record(action, **filters):
    return AuditRecord.objects.get(action=action, **filters)


def assert_chain_ok(tenant_id):
    assert audit_chain_verify(chain=AuditChain.objects.get(tenant_id=tenant_id)).ok


def test_conversation_change_in_the_admin_is_audited(admin_client, staff, conversation):
    url = f"/admin/conversations/conversation/{conversation.pk}/change/"

    response = admin_client.post(url, change_form(conversation, title="After", status="archived"))

    assert response.status_code == 302, response.content
    conversation.refresh_from_db()
    assert (conversation.title, conversation.status) == ("After", "archived")
    record = the_record("conversation.updated", resource_id=str(conversation.pk))
    assert record.tenant_id == conversation.tenant_id  # the tenant's own trail, not the staff's
    assert (record.actor_id, record.actor_label) == (staff.pk, "ops@example.com")
    assert record.details == {"fields": ["status", "title"]}
    assert (record.request_id, record.ip) == (ADMIN_REQUEST_ID, ADMIN_IP)
    assert_chain_ok(conversation.tenant_id)


def test_conversation_delete_in_the_admin_is_audited(admin_client, staff, conversation):
    url = f"/admin/conversations/conversation/{conversation.pk}/delete/"

    response = admin_client.post(url, {"post": "yes"})

    assert response.status_code == 302, response.content
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    record = the_record("conversation.deleted", resource_id=str(conversation.pk))
    assert (record.tenant_id, record.actor_id) == (conversation.tenant_id, staff.pk)


def test_bulk_delete_of_conversations_audits_each(admin_client, staff):
    conversations = [ConversationFactory(), ConversationFactory()]
    add_messages(conversations[0], 1)

    response = admin_client.post(
        "/admin/conversations/conversation/",
        {"action": "delete_selected", "_selected_action": [c.pk for c in conversations], "post": "yes"},
    )

    assert response.status_code == 302, response.content
    assert not Conversation.objects.filter(pk__in=[c.pk for c in conversations]).exists()
    records = AuditRecord.objects.filter(action="conversation.deleted", actor_id=staff.pk)
    assert sorted(r.resource_id for r in records) == sorted(str(c.pk) for c in conversations)


def test_messages_cannot_be_edited_added_or_deleted_in_the_admin(admin_client, conversation):
    message = conversation.messages.order_by("seq").first()
    base = "/admin/conversations/message/"

    edit = admin_client.post(f"{base}{message.pk}/change/", {"content": "rewritten", "status": "read"})
    delete = admin_client.post(f"{base}{message.pk}/delete/", {"post": "yes"})
    add = admin_client.get(f"{base}add/")

    assert edit.status_code == 403 and delete.status_code == 403 and add.status_code == 403
    message.refresh_from_db()
    assert message.content == "message 0"
    assert admin_client.get(f"{base}{message.pk}/change/").status_code == 200  # still viewable


def test_redacting_a_message_in_the_admin_is_audited_and_keeps_its_seq(admin_client, staff, conversation):
    message = conversation.messages.order_by("seq").last()

    response = admin_client.post(
        "/admin/conversations/message/", {"action": "redact_content", "_selected_action": [message.pk]}
    )

    assert response.status_code == 302, response.content
    message.refresh_from_db()
    assert message.content == "[redacted]" and message.seq == 2 and message.attachments == []
    record = the_record("message.redacted", resource_id=str(message.pk))
    assert (record.tenant_id, record.actor_id) == (conversation.tenant_id, staff.pk)
    # The trail says what happened, not what was removed.
    assert record.details == {"conversation_id": conversation.pk, "seq": 2, "chars_removed": len("message 1")}
    assert Message.objects.filter(conversation=conversation).count() == 2
    assert_chain_ok(conversation.tenant_id)


def test_staff_who_may_only_view_messages_cannot_redact(conversation):
    from django.contrib.auth.models import Permission
    from django.test import Client

    viewer = UserFactory(email="viewer@example.com", tenant=TenantFactory(slug="operators"), is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_message"))
    client = Client()
    client.force_login(viewer)
    message = conversation.messages.order_by("seq").last()

    listing = client.get("/admin/conversations/message/")
    response = client.post(
        "/admin/conversations/message/", {"action": "redact_content", "_selected_action": [message.pk]}
    )

    assert listing.status_code == 200 and b"redact_content" not in listing.content
    assert response.status_code == 200  # the action is not offered: nothing to run
    message.refresh_from_db()
    assert message.content == "message 1"
    assert not AuditRecord.objects.filter(action="message.redacted").exists()


def test_staff_get_no_more_over_the_api_than_their_tenant_role(conversation):
    """The admin acts for staff; the API does not: a staff member who only takes part in a
    conversation of their tenant may not change or delete it there."""
    from tests.conftest import client_for

    staff_member = UserFactory(tenant=conversation.tenant, role="member", is_staff=True)
    conversation.participants.add(staff_member)
    client = client_for(staff_member)

    edit = client.patch(f"/api/v1/conversations/{conversation.pk}", {"title": "Mine now"}, format="json")
    delete = client.delete(f"/api/v1/conversations/{conversation.pk}")

    assert edit.status_code == 403 and delete.status_code == 403
    conversation.refresh_from_db()
    assert conversation.title == "Before"
    assert not AuditRecord.objects.filter(action__in=["conversation.updated", "conversation.deleted"]).exists()
