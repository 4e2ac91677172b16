"""Writes through the admin are audited like any other: through the real admin pages, as a
staff user, the record lands on the conversation's tenant chain with the staff actor."""

import json

import pytest
from django.utils import timezone

from audits.models import AuditChain, AuditRecord
from audits.selectors import audit_chain_verify
from audits.services import audit_seal_chains
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
    audit_seal_chains()  # the test's transaction never commits: seal as the worker would
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


def test_a_participant_of_another_tenant_cannot_be_chosen(admin_client, conversation):
    stranger = UserFactory()  # another tenant
    url = f"/admin/conversations/conversation/{conversation.pk}/change/"
    before = set(conversation.participants.values_list("pk", flat=True))

    page = admin_client.get(url)
    response = admin_client.post(url, change_form(conversation, participants=[str(stranger.pk)], title="X"))

    assert f'value="{stranger.pk}"'.encode() not in page.content  # not offered in the widget
    assert response.status_code == 200  # the form again, with the error
    assert b"Select a valid choice" in response.content
    conversation.refresh_from_db()
    assert conversation.title == "Before"
    assert set(conversation.participants.values_list("pk", flat=True)) == before
    assert not AuditRecord.objects.filter(action__startswith="conversation.").exists()


def test_a_participant_of_the_same_tenant_is_added_through_the_service(admin_client, staff, conversation):
    colleague = UserFactory(tenant=conversation.tenant)
    chosen = [str(conversation.owner_id), str(colleague.pk)]

    response = admin_client.post(
        f"/admin/conversations/conversation/{conversation.pk}/change/", change_form(conversation, participants=chosen)
    )

    assert response.status_code == 302, response.content
    assert set(conversation.participants.values_list("pk", flat=True)) == {conversation.owner_id, colleague.pk}
    record = the_record("conversation.participants_changed", resource_id=str(conversation.pk))
    assert (record.tenant_id, record.actor_id) == (conversation.tenant_id, staff.pk)
    assert record.details == {"added": [colleague.pk], "removed": []}


def test_the_owner_stays_a_participant_when_staff_unselect_everyone(admin_client, conversation):
    response = admin_client.post(
        f"/admin/conversations/conversation/{conversation.pk}/change/", change_form(conversation, participants=[])
    )

    assert response.status_code == 302, response.content
    assert list(conversation.participants.values_list("pk", flat=True)) == [conversation.owner_id]


def test_tenant_owner_and_seq_cannot_be_changed_in_the_admin(admin_client, conversation):
    other = UserFactory()
    form = change_form(conversation, tenant=str(other.tenant_id), owner=str(other.pk), last_seq="99")

    response = admin_client.post(f"/admin/conversations/conversation/{conversation.pk}/change/", form)

    assert response.status_code == 302, response.content
    conversation.refresh_from_db()
    assert (conversation.tenant_id, conversation.last_seq) != (other.tenant_id, 99)
    assert conversation.owner_id != other.pk and conversation.last_seq == 2


def test_close_action_closes_through_the_service_and_audits_each(admin_client, staff):
    conversations = [ConversationFactory(), ConversationFactory(), ConversationFactory(status="closed")]

    response = admin_client.post(
        "/admin/conversations/conversation/",
        {"action": "close_conversations", "_selected_action": [c.pk for c in conversations]},
    )

    assert response.status_code == 302, response.content
    assert set(Conversation.objects.values_list("status", flat=True)) == {"closed"}
    records = AuditRecord.objects.filter(action="conversation.updated", actor_id=staff.pk)
    assert sorted(r.resource_id for r in records) == sorted(str(c.pk) for c in conversations[:2])
    assert all(r.details == {"fields": ["status"]} for r in records)


def test_export_action_downloads_the_selected_conversations_as_json_lines(admin_client, staff):
    first, second, not_chosen = ConversationFactory(title="First"), ConversationFactory(), ConversationFactory()
    add_messages(first, 2)

    response = admin_client.post(
        "/admin/conversations/conversation/",
        {"action": "export_conversations", "_selected_action": [first.pk, second.pk]},
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response["Content-Disposition"].startswith('attachment; filename="conversations-')
    documents = [json.loads(line) for line in response.content.decode().splitlines()]
    by_id = {d["conversation"]["id"]: d for d in documents}
    assert set(by_id) == {first.pk, second.pk}
    assert [(m["seq"], m["content"]) for m in by_id[first.pk]["messages"]] == [(1, "message 0"), (2, "message 1")]
    exported = AuditRecord.objects.filter(action="conversation.exported", actor_id=staff.pk)
    assert sorted(r.resource_id for r in exported) == sorted([str(first.pk), str(second.pk)])
    assert not_chosen.pk not in by_id


def test_message_list_shows_an_excerpt_and_times_to_the_second(admin_client, conversation):
    message = conversation.messages.order_by("seq").first()
    message.content = "A long line " * 20
    message.save(update_fields=["content"])

    response = admin_client.get("/admin/conversations/message/")

    body = response.content.decode()
    assert response.status_code == 200
    assert "A long line A long line" in body and "…" in body
    assert timezone.localtime(message.created_at).strftime("%Y-%m-%d %H:%M:%S") in body


def test_message_list_filters_by_conversation_and_by_tenant(admin_client, conversation):
    other = ConversationFactory()
    add_messages(other, 3)

    by_conversation = admin_client.get(f"/admin/conversations/message/?conversation={other.pk}")
    by_tenant = admin_client.get(f"/admin/conversations/message/?tenant__id__exact={conversation.tenant_id}")
    bad = admin_client.get("/admin/conversations/message/?conversation=nope")

    assert [m.conversation_id for m in by_conversation.context["cl"].result_list] == [other.pk] * 3
    assert {m.conversation_id for m in by_tenant.context["cl"].result_list} == {conversation.pk}
    assert bad.status_code == 200 and list(bad.context["cl"].result_list) == []


def test_conversation_page_shows_messages_in_seq_order_with_seconds(admin_client, conversation):
    response = admin_client.get(f"/admin/conversations/conversation/{conversation.pk}/change/")

    body = response.content.decode()
    assert body.index("message 0") < body.index("message 1")
    first = conversation.messages.get(seq=1)
    assert timezone.localtime(first.created_at).strftime("%Y-%m-%d %H:%M:%S") in body
    assert f"/admin/conversations/message/?conversation={conversation.pk}" in body


@pytest.mark.parametrize("url", ["/admin/conversations/conversation/", "/admin/conversations/message/"])
def test_changelist_query_count_does_not_grow_with_rows(admin_client, url):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def page_queries():
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(url).status_code == 200
        return len(queries)

    for _ in range(2):
        add_messages(ConversationFactory(), 2)
    few = page_queries()
    for _ in range(10):
        add_messages(ConversationFactory(), 2)
    many = page_queries()

    assert many == few, f"{few} queries with 2 conversations, {many} with 12"
    assert few <= 12
