"""Races on PostgreSQL: concurrent registrations of one tenant name, concurrent refreshes
of one refresh token. Real threads, real connections, committed rows."""

import pytest
from rest_framework.test import APIClient

from accounts.models import Tenant, User
from audits.models import AuditRecord
from tests.helpers import run_together

pytestmark = [pytest.mark.realstack, pytest.mark.django_db(transaction=True)]


def test_concurrent_registrations_of_one_tenant_name_all_succeed(real_stack):
    def register(i):
        response = APIClient().post(
            "/api/v1/auth/register",
            {
                "email": f"founder{i}@example.com",
                "password": "analytical-engine-1843",
                "display_name": f"Founder {i}",
                "tenant_name": "Acme",
            },
            format="json",
        )
        return response.status_code, response.content

    results = run_together(6, register)

    assert [status for status, _ in results] == [201] * 6, results
    slugs = sorted(Tenant.objects.filter(name="Acme").values_list("slug", flat=True))
    assert slugs == sorted(["acme", "acme-2", "acme-3", "acme-4", "acme-5", "acme-6"])
    assert User.objects.count() == 6


def test_concurrent_refreshes_of_one_token_rotate_once(real_stack, user):
    from accounts.services import tokens_for

    refresh = tokens_for(user).refresh

    def rotate(_i):
        response = APIClient().post("/api/v1/auth/token/refresh", {"refresh": refresh}, format="json")
        return response.status_code, response.json()

    results = run_together(6, rotate)

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [401] * 5, results
    assert {body["error"]["code"] for status, body in results if status == 401} == {"token_not_valid"}
    (winner,) = [body for status, body in results if status == 200]
    assert winner["access"] and winner["refresh"] != refresh
    # The losers presented a spent token: under the OAuth 2.0 Security BCP that is reuse,
    # and no grace period tells a racing tab from a thief (docs/decisions.md). The family
    # is revoked: the winner's new refresh token is refused too, its access token works.
    again = APIClient().post("/api/v1/auth/token/refresh", {"refresh": winner["refresh"]}, format="json")
    replay = APIClient().post("/api/v1/auth/token/refresh", {"refresh": refresh}, format="json")
    assert (again.status_code, replay.status_code) == (401, 401)
    assert AuditRecord.objects.filter(action="auth.refresh_reused").count() >= 5
    me = APIClient(HTTP_AUTHORIZATION=f"Bearer {winner['access']}").get("/api/v1/auth/me")
    assert me.status_code == 200
