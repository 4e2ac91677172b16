"""Channel accounts over the API: the secret once, owners/admins only, tenant scope,
settings validated per channel, audited without the secret."""

import pytest

from audits.models import AuditRecord
from hub.models import ChannelAccount
from hub.secrets import secret_decrypt
from tests.accounts.factories import TenantFactory, UserFactory
from tests.helpers import assert_error, client_for

pytestmark = pytest.mark.django_db

URL = "/api/v1/channel-accounts/"


def _create(client, **overrides):
    body = {"channel": "whatsapp", "name": "Support", "external_id": "15550001111", "settings": {"latency_ms": 10}}
    return client.post(URL, {**body, **overrides}, format="json")


def test_create_shows_the_secret_once_and_stores_it_encrypted(auth_api):
    response = _create(auth_api)

    assert response.status_code == 201, response.content
    body = response.json()
    secret = body["secret"]
    assert len(secret) >= 32
    assert body["settings"] == {"agent_enabled": True, "latency_ms": 10, "failure_rate": 0.0, "report_read": False}
    account = ChannelAccount.objects.get(pk=body["id"])
    assert secret not in account.secret_encrypted and secret_decrypt(account.secret_encrypted) == secret
    # Never again: not in the list, the detail, an update, nor the audit trail.
    for later in (
        auth_api.get(URL),
        auth_api.get(f"{URL}{account.pk}"),
        auth_api.patch(f"{URL}{account.pk}", {"name": "Sales"}, format="json"),
    ):
        assert later.status_code == 200 and secret not in later.content.decode() and "secret" not in later.json()
    record = AuditRecord.objects.get(action="channel_account.created")
    assert record.resource_id == str(account.pk) and secret not in str(record.details)


def test_update_validates_settings_and_delete_disconnects(auth_api):
    account_id = _create(auth_api).json()["id"]

    bad = auth_api.patch(f"{URL}{account_id}/", {"settings": {"failure_rate": 2}}, format="json")
    good = auth_api.patch(
        f"{URL}{account_id}/", {"settings": {"failure_rate": 0.5, "report_read": True}}, format="json"
    )
    gone = auth_api.delete(f"{URL}{account_id}")

    assert_error(bad, 400, "validation_error")
    assert good.json()["settings"]["failure_rate"] == 0.5 and good.json()["settings"]["report_read"] is True
    assert gone.status_code == 204
    assert ChannelAccount.objects.get(pk=account_id).is_active is False
    assert_error(auth_api.get(f"{URL}{account_id}"), 404, "not_found")
    assert AuditRecord.objects.filter(action="channel_account.disconnected", resource_id=str(account_id)).exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"channel": "telegram"}, "channel"),
        ({"settings": {"latency_ms": -1}}, "settings"),
        ({"settings": {"surprise": 1}}, "settings"),
        ({"settings": "fast"}, "settings"),
        ({"channel": "webhook", "settings": {}}, "settings"),
        ({"channel": "webhook", "settings": {"url": "ftp://example.com"}}, "settings"),
        ({"name": 12}, "name"),
    ],
)
def test_bad_input_is_a_validation_error_and_stores_nothing(auth_api, overrides, field):
    error = assert_error(_create(auth_api, **overrides), 400, "validation_error")

    assert field in error["details"]
    assert not ChannelAccount.objects.exists()


def test_a_webhook_account_needs_an_http_url(auth_api):
    response = _create(auth_api, channel="webhook", external_id="crm", settings={"url": "https://crm.example.com/in"})

    assert response.status_code == 201
    assert response.json()["settings"] == {"agent_enabled": True, "url": "https://crm.example.com/in"}


def test_external_id_is_unique_per_channel_among_connected_accounts(auth_api):
    first = _create(auth_api)
    assert_error(_create(auth_api), 409, "channel_account_exists")
    other_channel = _create(auth_api, channel="instagram")
    auth_api.delete(f"{URL}{first.json()['id']}")
    again = _create(auth_api)

    assert other_channel.status_code == 201 and again.status_code == 201


def test_members_may_not_manage_accounts_and_strangers_get_404(auth_api, tenant):
    account_id = _create(auth_api).json()["id"]
    member = client_for(UserFactory(tenant=tenant, role="member"))
    stranger = client_for(UserFactory(tenant=TenantFactory(), role="owner"))

    assert_error(member.get(URL), 403, "permission_denied")
    assert_error(_create(member, external_id="other"), 403, "permission_denied")
    assert_error(stranger.get(f"{URL}{account_id}"), 404, "not_found")
    assert_error(stranger.delete(f"{URL}{account_id}"), 404, "not_found")
    assert stranger.get(URL).json()["results"] == []
    assert_error(client_for_anonymous().get(URL), 401, "not_authenticated")


def client_for_anonymous():
    from rest_framework.test import APIClient

    return APIClient()
