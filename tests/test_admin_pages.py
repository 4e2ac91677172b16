"""Every admin list, add and change page: staff see it (or are told it is not offered, 403),
a signed-in user who is not staff is sent to the admin login, and nothing answers 500."""

import pytest
from django.contrib import admin
from django.test import Client

from accounts.models import Tenant, User
from audits.services import audit_record
from chat.models import AgentRun, Task
from conversations.models import Conversation, Message
from files.services import file_create
from hub.services.accounts import channel_account_create
from tests.accounts.factories import UserFactory
from tests.chat.factories import AgentRunFactory, TaskFactory
from tests.conversations.factories import ConversationFactory, add_messages

pytestmark = pytest.mark.django_db

# Models whose rows are only ever created through the API, the agent or commands: the
# admin does not offer "Add" (403), so no half-made row can be saved.
NOT_ADDED_IN_ADMIN = {
    Tenant,
    Conversation,
    Message,
    AgentRun,
    Task,
    "audits.auditrecord",
    "audits.auditchain",
    "token_blacklist.outstandingtoken",  # simplejwt: issued tokens come from logins
    "files.file",  # uploads come through the chunked upload API
    "hub.channelaccount",  # created through the API (it returns the secret once)
    "hub.contact",  # created by bindings and inbound messages
    "hub.delivery",  # created by routing a message
}


@pytest.fixture
def rows(db, settings, tmp_path):
    settings.FILES_STORAGE = "local"
    settings.FILES_LOCAL_ROOT = tmp_path / "files"
    conversation = ConversationFactory()
    add_messages(conversation, 2)
    # The hub's and the files' admin pages too, with a row each (their change pages).
    owner = UserFactory(tenant=conversation.tenant, role=User.Role.OWNER)
    channel_account_create(user=owner, channel="whatsapp", name="Support", external_id="15550002222", settings={})
    file_create(user=conversation.owner, filename="a.pdf", size=3, content_type="application/pdf", sha256="0" * 64)
    run = AgentRunFactory(conversation=conversation, status=AgentRun.Status.FAILED, error="boom")
    TaskFactory(owner=conversation.owner)
    audit_record(tenant=conversation.tenant, actor=conversation.owner, action="test.made", resource_type="t")
    return run


def registered():
    return sorted(admin.site._registry, key=lambda model: model._meta.label)


def urls_of(model):
    opts = model._meta
    obj = model.objects.order_by("pk").first()
    base = f"/admin/{opts.app_label}/{opts.model_name}/"
    return base, f"{base}add/", (f"{base}{obj.pk}/change/" if obj else None)


def not_added(model):
    return model in NOT_ADDED_IN_ADMIN or model._meta.label_lower in NOT_ADDED_IN_ADMIN


def test_every_admin_page_loads_for_staff(admin_client, rows):
    checked = []
    for model in registered():
        listing, add, change = urls_of(model)

        assert admin_client.get(listing).status_code == 200, listing
        assert admin_client.get(add).status_code == (403 if not_added(model) else 200), add
        if change:
            assert admin_client.get(change).status_code == 200, change
        checked.append(model._meta.label)

    assert {"conversations.Conversation", "conversations.Message", "chat.AgentRun", "accounts.User"} <= set(checked)
    assert {"files.File", "hub.ChannelAccount", "hub.Contact", "hub.Delivery"} <= set(checked)


def test_no_admin_page_is_shown_to_a_signed_in_user_who_is_not_staff(rows):
    member = UserFactory(role=User.Role.OWNER)
    client = Client()
    client.force_login(member)

    for model in registered():
        for url in filter(None, urls_of(model)):
            response = client.get(url)
            assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
