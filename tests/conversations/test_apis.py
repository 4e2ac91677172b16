import pytest

from audits.models import AuditRecord
from chat.models import AgentRun
from conversations.models import Conversation, Message
from tests.accounts.factories import TenantFactory, UserFactory
from tests.chat.factories import AgentRunFactory
from tests.conversations.factories import ConversationFactory, add_messages
from tests.helpers import assert_error, client_for

pytestmark = pytest.mark.django_db


def test_create_and_retrieve_conversation(auth_api, user):
    colleague = UserFactory(tenant=user.tenant)

    created = auth_api.post(
        "/api/v1/conversations",
        {"title": "Plans", "metadata": {"topic": "q3"}, "participant_ids": [colleague.id]},
        format="json",
    )

    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["title"], body["channel"], body["status"], body["metadata"]) == (
        "Plans",
        "api",
        "open",
        {"topic": "q3"},
    )
    assert body["participant_ids"] == sorted([user.id, colleague.id])
    fetched = auth_api.get(f"/api/v1/conversations/{body['id']}/")
    assert fetched.status_code == 200 and fetched.json() == body
    assert client_for(colleague).get(f"/api/v1/conversations/{body['id']}").status_code == 200


def test_create_with_foreign_participant_is_400_and_creates_nothing(auth_api):
    stranger = UserFactory(tenant=TenantFactory())

    response = auth_api.post("/api/v1/conversations", {"participant_ids": [stranger.id]}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert list(error["details"]) == ["participant_ids"]
    assert Conversation.objects.count() == 0


@pytest.mark.parametrize("participant_id", [2**63, -(2**63) - 1])
def test_create_with_participant_id_beyond_bigint_is_400_not_500(auth_api, participant_id):
    # Found by the schema fuzz: these reached the database and overflowed (SQLite: OverflowError, 500).
    response = auth_api.post("/api/v1/conversations", {"participant_ids": [participant_id]}, format="json")

    error = assert_error(response, 400, "validation_error")
    assert list(error["details"]) == ["participant_ids"]
    assert Conversation.objects.count() == 0


def test_create_with_bad_channel_is_400(auth_api):
    assert_error(auth_api.post("/api/v1/conversations", {"channel": "fax"}, format="json"), 400, "validation_error")


def test_list_is_scoped_paginated_and_filtered(auth_api, user):
    mine = [ConversationFactory(owner=user, title=f"Trip {i}") for i in range(3)]
    archived = ConversationFactory(owner=user, title="Old stuff", status="archived")
    ConversationFactory(owner=UserFactory(tenant=user.tenant))  # colleague's, not shared
    ConversationFactory(owner=UserFactory(tenant=TenantFactory()))  # other tenant

    everything = auth_api.get("/api/v1/conversations").json()
    page = auth_api.get("/api/v1/conversations?page_size=2").json()
    filtered = auth_api.get("/api/v1/conversations?status=archived").json()
    searched = auth_api.get("/api/v1/conversations?search=trip").json()

    assert {c["id"] for c in everything["results"]} == {c.id for c in [*mine, archived]}
    assert len(page["results"]) == 2 and page["next"] and page["previous"] is None
    rest = auth_api.get(page["next"]).json()
    assert {c["id"] for c in page["results"] + rest["results"]} == {c.id for c in [*mine, archived]}
    assert [c["id"] for c in filtered["results"]] == [archived.id]
    assert {c["id"] for c in searched["results"]} == {c.id for c in mine}


def test_list_with_bad_filter_is_400(auth_api):
    assert_error(auth_api.get("/api/v1/conversations?status=nope"), 400, "validation_error")


def test_list_query_count_does_not_grow_with_rows(auth_api, user, django_assert_max_num_queries):
    for _ in range(15):
        ConversationFactory(owner=user)

    with django_assert_max_num_queries(6):
        response = auth_api.get("/api/v1/conversations")

    assert len(response.json()["results"]) == 15


def test_update_and_delete(auth_api, user):
    conversation = ConversationFactory(owner=user)

    patched = auth_api.patch(
        f"/api/v1/conversations/{conversation.id}", {"title": "New", "status": "closed"}, format="json"
    )
    deleted = auth_api.delete(f"/api/v1/conversations/{conversation.id}")

    assert patched.status_code == 200 and patched.json()["title"] == "New" and patched.json()["status"] == "closed"
    assert deleted.status_code == 204
    assert not Conversation.objects.filter(pk=conversation.id).exists()


def test_plain_member_owner_can_update_and_delete_their_conversation(tenant):
    owner = UserFactory(tenant=tenant, role="member")
    conversation = ConversationFactory(owner=owner)
    client = client_for(owner)

    patched = client.patch(f"/api/v1/conversations/{conversation.id}", {"title": "Mine"}, format="json")
    deleted = client.delete(f"/api/v1/conversations/{conversation.id}")

    assert patched.status_code == 200 and patched.json()["title"] == "Mine"
    assert deleted.status_code == 204
    assert not Conversation.objects.filter(pk=conversation.id).exists()


@pytest.mark.parametrize(
    ("method", "body"),
    [("patch", {"title": "Hijacked"}), ("put", {"title": "Hijacked", "status": "closed"}), ("delete", None)],
)
def test_participant_cannot_update_or_delete_the_owners_conversation(tenant, method, body):
    owner = UserFactory(tenant=tenant, role="member")
    participant = UserFactory(tenant=tenant, role="member")
    conversation = ConversationFactory(owner=owner, title="Owner's", status="open")
    conversation.participants.add(participant)

    response = getattr(client_for(participant), method)(f"/api/v1/conversations/{conversation.id}", body, format="json")

    assert_error(response, 403, "permission_denied")
    conversation.refresh_from_db()
    assert (conversation.title, conversation.status) == ("Owner's", "open")
    assert not AuditRecord.objects.filter(action__in=["conversation.updated", "conversation.deleted"]).exists()


def test_tenant_admin_who_takes_part_can_update_and_delete(tenant):
    owner = UserFactory(tenant=tenant, role="member")
    admin = UserFactory(tenant=tenant, role="admin")
    conversation = ConversationFactory(owner=owner)
    conversation.participants.add(admin)
    client = client_for(admin)

    patched = client.patch(f"/api/v1/conversations/{conversation.id}", {"status": "closed"}, format="json")
    deleted = client.delete(f"/api/v1/conversations/{conversation.id}")

    assert patched.status_code == 200 and patched.json()["status"] == "closed"
    assert deleted.status_code == 204
    assert not Conversation.objects.filter(pk=conversation.id).exists()


def test_tenant_admin_who_does_not_take_part_gets_404(tenant):
    conversation = ConversationFactory(owner=UserFactory(tenant=tenant, role="member"))
    admin = UserFactory(tenant=tenant, role="admin")

    response = client_for(admin).delete(f"/api/v1/conversations/{conversation.id}")

    assert_error(response, 404, "not_found")
    assert Conversation.objects.filter(pk=conversation.id).exists()


def test_update_with_bad_status_is_400_and_changes_nothing(auth_api, user):
    conversation = ConversationFactory(owner=user, title="Keep")

    response = auth_api.patch(
        f"/api/v1/conversations/{conversation.id}", {"title": "x", "status": "gone"}, format="json"
    )

    assert_error(response, 400, "validation_error")
    conversation.refresh_from_db()
    assert conversation.title == "Keep"


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_other_tenants_conversation_is_404(auth_api, method):
    theirs = ConversationFactory(owner=UserFactory(tenant=TenantFactory()))

    response = getattr(auth_api, method)(f"/api/v1/conversations/{theirs.id}", {}, format="json")

    assert_error(response, 404, "not_found")
    assert Conversation.objects.filter(pk=theirs.id).exists()


def test_messages_are_ordered_by_seq_and_resume_after_seq(auth_api, user):
    conversation = ConversationFactory(owner=user)
    add_messages(conversation, 5)

    everything = auth_api.get(f"/api/v1/conversations/{conversation.id}/messages").json()
    after = auth_api.get(f"/api/v1/conversations/{conversation.id}/messages/?after_seq=3").json()

    assert [m["seq"] for m in everything["results"]] == [1, 2, 3, 4, 5]
    assert [m["seq"] for m in after["results"]] == [4, 5]


def test_messages_pages_follow_seq(auth_api, user):
    conversation = ConversationFactory(owner=user)
    add_messages(conversation, 5)

    first = auth_api.get(f"/api/v1/conversations/{conversation.id}/messages?page_size=2").json()
    second = auth_api.get(first["next"]).json()

    assert [m["seq"] for m in first["results"]] == [1, 2]
    assert [m["seq"] for m in second["results"]] == [3, 4]


def test_messages_bad_after_seq_is_400(auth_api, user):
    conversation = ConversationFactory(owner=user)

    assert_error(auth_api.get(f"/api/v1/conversations/{conversation.id}/messages?after_seq=x"), 400, "validation_error")


def test_read_receipt_marks_message_read(auth_api, user):
    conversation = ConversationFactory(owner=user)
    (message,) = add_messages(conversation, 1)

    response = auth_api.post(f"/api/v1/conversations/{conversation.id}/messages/{message.id}/read")

    assert response.status_code == 200
    assert response.json()["status"] == "read" and response.json()["read_at"]
    message.refresh_from_db()
    assert message.status == "read"


def test_read_receipt_is_audited_once(auth_api, user):
    conversation = ConversationFactory(owner=user)
    (message,) = add_messages(conversation, 1)
    url = f"/api/v1/conversations/{conversation.id}/messages/{message.id}/read"

    first = auth_api.post(url)
    again = auth_api.post(url)

    assert first.status_code == again.status_code == 200
    assert again.json()["read_at"] == first.json()["read_at"]
    records = AuditRecord.objects.filter(action="message.read")
    assert [(r.actor_id, r.resource_type, r.resource_id, r.details) for r in records] == [
        (user.id, "message", str(message.id), {"conversation_id": conversation.id})
    ]


def test_read_receipt_in_a_conversation_the_caller_does_not_see_is_404(auth_api, user):
    theirs = ConversationFactory(owner=UserFactory(tenant=user.tenant))
    (message,) = add_messages(theirs, 1)

    response = auth_api.post(f"/api/v1/conversations/{theirs.id}/messages/{message.id}/read")

    assert_error(response, 404, "not_found")
    message.refresh_from_db()
    assert message.status != "read"
    assert not AuditRecord.objects.filter(action="message.read").exists()


def test_read_receipt_for_message_of_another_conversation_is_404(auth_api, user):
    mine = ConversationFactory(owner=user)
    (other_message,) = add_messages(ConversationFactory(owner=user), 1)

    assert_error(auth_api.post(f"/api/v1/conversations/{mine.id}/messages/{other_message.id}/read"), 404, "not_found")


def test_turns_list_agent_runs(auth_api):
    cid = auth_api.post("/api/v1/chat", {"message": "add a task to x"}, format="json").json()["conversation_id"]
    auth_api.post("/api/v1/chat", {"message": "hello", "conversation_id": cid}, format="json")

    turns = auth_api.get(f"/api/v1/conversations/{cid}/turns").json()["results"]

    assert [t["status"] for t in turns] == ["completed", "completed"]
    assert turns[1]["tool_calls"][0]["name"] == "add_task"
    assert turns[0]["tool_calls"] == []


def test_turns_list_shows_queued_and_failed_runs_of_the_callers_conversation_only(auth_api, user):
    conversation = ConversationFactory(owner=user)
    queued = AgentRunFactory(conversation=conversation)
    failed = AgentRunFactory(conversation=conversation, status=AgentRun.Status.FAILED, error="provider down")
    colleagues = AgentRunFactory(conversation=ConversationFactory(owner=UserFactory(tenant=user.tenant)))

    turns = auth_api.get(f"/api/v1/conversations/{conversation.pk}/turns").json()["results"]
    foreign = auth_api.get(f"/api/v1/conversations/{colleagues.conversation_id}/turns")

    assert [(t["id"], t["status"], t["error"]) for t in turns] == [  # newest first
        (failed.pk, "failed", "provider down"),
        (queued.pk, "queued", ""),
    ]
    assert [t["trigger_message_id"] for t in turns] == [failed.trigger_message_id, queued.trigger_message_id]
    assert_error(foreign, 404, "not_found")


def test_export_json_and_markdown(auth_api):
    cid = auth_api.post("/api/v1/chat", {"message": "add a task to buy milk"}, format="json").json()["conversation_id"]

    as_json = auth_api.get(f"/api/v1/conversations/{cid}/export?format=json")
    as_markdown = auth_api.get(f"/api/v1/conversations/{cid}/export/?format=markdown")
    bad = auth_api.get(f"/api/v1/conversations/{cid}/export?format=pdf")

    assert as_json.status_code == 200
    assert as_json["Content-Disposition"] == f'attachment; filename="conversation-{cid}.json"'
    document = as_json.json()
    assert document["conversation"]["id"] == cid
    assert [m["role"] for m in document["messages"]] == ["user", "assistant"]
    assert as_markdown.status_code == 200 and as_markdown["Content-Type"].startswith("text/markdown")
    text = as_markdown.content.decode()
    assert "### 1. User" in text and "add a task to buy milk" in text and "tool `add_task`" in text
    assert_error(bad, 400, "validation_error")


def test_messages_of_foreign_conversation_are_404(auth_api):
    theirs = ConversationFactory(owner=UserFactory(tenant=TenantFactory()))
    add_messages(theirs, 1)

    assert_error(auth_api.get(f"/api/v1/conversations/{theirs.id}/messages"), 404, "not_found")
    assert_error(auth_api.get(f"/api/v1/conversations/{theirs.id}/export"), 404, "not_found")
    assert Message.objects.filter(conversation=theirs).count() == 1
