"""The admin login draws on the same per-IP budget as /api/v1/auth/token and leaves the same
audit trail as a failed API login."""

import pytest
from django.contrib.auth.signals import user_login_failed
from django.test import Client

from audits.models import AuditRecord
from tests.accounts.factories import PASSWORD, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"


@pytest.fixture
def staff(db):
    return UserFactory(email="ops@example.com", tenant=TenantFactory(slug="operators"), is_staff=True)


def attempt(client, email, password="wrong-password-1"):
    return client.post(LOGIN, {"username": email, "password": password, "next": "/admin/"})


def test_failed_admin_logins_are_audited_like_api_ones(staff):
    member = UserFactory(email="member@example.com")
    client = Client(REMOTE_ADDR="10.1.0.1", HTTP_USER_AGENT="admin-tests")

    bad_password = attempt(client, "ops@example.com")
    unknown = attempt(client, "nobody@example.com")
    not_staff = attempt(client, "member@example.com", PASSWORD)

    assert [r.status_code for r in (bad_password, unknown, not_staff)] == [200, 200, 200]
    records = {r.details["email"]: r for r in AuditRecord.objects.filter(action="auth.login_failed")}
    assert records["ops@example.com"].tenant_id == staff.tenant_id
    assert records["ops@example.com"].details == {"email": "ops@example.com", "reason": "bad_password"}
    assert (records["ops@example.com"].resource_type, records["ops@example.com"].resource_id) == ("user", str(staff.pk))
    assert records["nobody@example.com"].tenant_id is None  # the platform chain
    assert records["nobody@example.com"].details["reason"] == "unknown_email"
    assert records["member@example.com"].tenant_id == member.tenant_id
    assert records["member@example.com"].details["reason"] == "not_staff"
    for record in records.values():
        assert (record.ip, record.user_agent) == ("10.1.0.1", "admin-tests")
        assert record.request_id


def test_over_the_per_ip_limit_the_admin_login_answers_429_without_hashing(frozen_clock, settings, staff):
    settings.RATE_LIMIT_AUTH_PER_IP = "3/m"
    client = Client(REMOTE_ADDR="10.1.0.2")
    hashed = []
    user_login_failed.connect(lambda **kwargs: hashed.append(1), weak=False, dispatch_uid="admin-login-test")
    try:
        attempts = [attempt(client, "ops@example.com") for _ in range(3)]
        blocked = attempt(client, "ops@example.com")
        blocked_right_password = attempt(client, "ops@example.com", PASSWORD)
    finally:
        user_login_failed.disconnect(dispatch_uid="admin-login-test")
    other_ip = attempt(Client(REMOTE_ADDR="10.1.0.3"), "ops@example.com", PASSWORD)

    assert [r.status_code for r in attempts] == [200, 200, 200]
    assert blocked.status_code == 429 and blocked_right_password.status_code == 429
    assert int(blocked["Retry-After"]) >= 1
    assert b"Too many login attempts" in blocked.content
    assert len(hashed) == 3  # the refused attempts never reached authenticate()
    assert AuditRecord.objects.filter(action="auth.login_failed").count() == 3
    assert other_ip.status_code == 302


def test_admin_login_and_api_token_share_one_budget(frozen_clock, settings, staff):
    settings.RATE_LIMIT_AUTH_PER_IP = "2/m"
    client = Client(REMOTE_ADDR="10.1.0.4")

    api = client.post(
        "/api/v1/auth/token", {"email": "ops@example.com", "password": "nope"}, content_type="application/json"
    )
    admin = attempt(client, "ops@example.com")
    refused = attempt(client, "ops@example.com")

    assert (api.status_code, admin.status_code, refused.status_code) == (401, 200, 429)


def test_successful_admin_login_below_the_limit_works_and_is_audited(frozen_clock, settings, staff):
    settings.RATE_LIMIT_AUTH_PER_IP = "3/m"
    client = Client(REMOTE_ADDR="10.1.0.5")
    attempt(client, "ops@example.com")

    response = attempt(client, "ops@example.com", PASSWORD)

    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    login = AuditRecord.objects.get(action="auth.login")
    assert (login.tenant_id, login.actor_id, login.details) == (staff.tenant_id, staff.pk, {"via": "admin"})


def test_showing_the_login_page_is_not_an_attempt(frozen_clock, settings):
    settings.RATE_LIMIT_AUTH_PER_IP = "1/m"
    client = Client(REMOTE_ADDR="10.1.0.6")

    pages = [client.get(LOGIN).status_code for _ in range(3)]

    assert pages == [200, 200, 200]
