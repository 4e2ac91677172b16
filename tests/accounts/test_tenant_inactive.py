"""A deactivated tenant's users are locked out everywhere: API calls, login, refresh,
SSE and WebSocket (``access_from_token``)."""

import pytest

from accounts.services import tokens_for
from audits.models import AuditRecord
from config.api.auth import access_from_token
from tests.accounts.factories import PASSWORD, UserFactory
from tests.helpers import assert_error, client_for

pytestmark = pytest.mark.django_db


def deactivate(tenant) -> None:
    tenant.is_active = False
    tenant.save(update_fields=["is_active"])


def test_access_token_of_a_deactivated_tenant_is_401(user):
    client = client_for(user)
    assert client.get("/api/v1/auth/me").status_code == 200
    deactivate(user.tenant)

    response = client.get("/api/v1/auth/me")

    assert_error(response, 401, "authentication_failed")
    assert "WWW-Authenticate" in response


def test_login_to_a_deactivated_tenant_is_401_and_recorded(api, user):
    deactivate(user.tenant)

    response = api.post("/api/v1/auth/token", {"email": user.email, "password": PASSWORD}, format="json")

    error = assert_error(response, 401, "invalid_credentials")
    assert "tenant" not in error["message"].lower()
    failed = AuditRecord.objects.get(action="auth.login_failed")
    assert (failed.tenant_id, failed.details["reason"]) == (user.tenant_id, "tenant_inactive")
    assert not AuditRecord.objects.filter(action="auth.login").exists()


def test_wrong_password_on_a_deactivated_tenant_stays_bad_password(api, user):
    deactivate(user.tenant)

    response = api.post("/api/v1/auth/token", {"email": user.email, "password": "wrong-one"}, format="json")

    assert_error(response, 401, "invalid_credentials")
    assert AuditRecord.objects.get(action="auth.login_failed").details["reason"] == "bad_password"


def test_refresh_for_a_deactivated_tenant_is_401(api, user):
    refresh = tokens_for(user).refresh
    deactivate(user.tenant)

    response = api.post("/api/v1/auth/token/refresh", {"refresh": refresh}, format="json")

    assert_error(response, 401, "token_not_valid")
    assert not AuditRecord.objects.filter(action="auth.token_refreshed").exists()


def test_access_from_token_refuses_a_deactivated_tenant(user):
    access = tokens_for(user).access
    assert access_from_token(access).user == user
    deactivate(user.tenant)

    assert access_from_token(access) is None


def test_other_tenants_keep_working(user):
    other = UserFactory()
    deactivate(user.tenant)

    response = client_for(other).get("/api/v1/auth/me")

    assert response.status_code == 200
    assert (response.json()["user"]["id"], response.json()["tenant"]["id"]) == (other.pk, other.tenant_id)
