"""The hub for operators: the admin (accounts without the secret, deliveries with their
attempts, the re-queue action) and manage.py retry_failed_deliveries."""

import pytest
from django.core.management import call_command

from audits.models import AuditRecord
from conversations.models import Message
from hub.models import Delivery, DeliveryAttempt, MessageStatusChange

from .conftest import connect

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_delivery(auth_api, user, settings, django_capture_on_commit_callbacks):
    """A message whose delivery failed (its account fails every send), then the account
    recovered."""
    settings.HUB_MAX_ATTEMPTS = 2
    flaky = connect(user, settings={"failure_rate": 1.0})
    conversation = auth_api.post(
        "/api/v1/conversations/", {"channel_account_id": flaky.account.pk, "contact": {"address": "9"}}, format="json"
    ).json()
    with django_capture_on_commit_callbacks(execute=True):
        auth_api.post(f"/api/v1/conversations/{conversation['id']}/messages", {"content": "hi"}, format="json")
    flaky.account.settings = {**flaky.account.settings, "failure_rate": 0.0}
    flaky.account.save(update_fields=["settings"])
    delivery = Delivery.objects.get()
    assert delivery.state == "failed"
    return delivery


def test_retry_failed_deliveries_requeues_and_delivers(failed_delivery, django_capture_on_commit_callbacks, capsys):
    with django_capture_on_commit_callbacks(execute=True):
        call_command("retry_failed_deliveries")

    assert "requeued 1 delivery" in capsys.readouterr().out
    failed_delivery.refresh_from_db()
    assert (failed_delivery.state, failed_delivery.attempts) == ("sent", 1)
    assert list(DeliveryAttempt.objects.values_list("outcome", flat=True)) == ["retry", "failed", "sent"]
    history = list(MessageStatusChange.objects.filter(message=failed_delivery.message).values_list("status", flat=True))
    assert history == ["accepted", "queued", "failed", "queued", "sent", "delivered"]
    assert AuditRecord.objects.filter(action="delivery.requeued").count() == 1


def test_the_admin_requeues_failed_deliveries(admin_client, failed_delivery, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/hub/delivery/", {"action": "requeue", "_selected_action": [failed_delivery.pk]}
        )

    assert response.status_code == 302
    assert Message.objects.get(pk=failed_delivery.message_id).status == "delivered"
    assert AuditRecord.objects.get(action="delivery.requeued").actor_id is not None


def test_admin_pages_show_accounts_without_the_secret_and_deliveries_with_attempts(admin_client, failed_delivery):
    account = failed_delivery.account
    account_page = admin_client.get(f"/admin/hub/channelaccount/{account.pk}/change/")
    delivery_page = admin_client.get(f"/admin/hub/delivery/{failed_delivery.pk}/change/")
    lists = [admin_client.get(f"/admin/hub/{name}/") for name in ("channelaccount", "delivery", "contact")]

    assert account_page.status_code == 200 and delivery_page.status_code == 200
    assert account.secret_encrypted not in account_page.content.decode()
    assert "secret" not in account_page.content.decode().lower().replace("csrfmiddlewaretoken", "")
    assert "HTTP 503" in delivery_page.content.decode()  # the attempts' errors, inline
    assert all(page.status_code == 200 for page in lists)
