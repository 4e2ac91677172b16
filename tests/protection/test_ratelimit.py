import datetime as dt

import pytest
from asgiref.sync import async_to_sync
from prometheus_client import REGISTRY

from accounts.models import Tenant
from config.api.ratelimit import atenant_usage, tenant_usage
from tests.accounts.factories import TenantFactory, UserFactory
from tests.helpers import client_for

pytestmark = pytest.mark.django_db

ME = "/api/v1/auth/me"
TOKEN = "/api/v1/auth/token"


def rejections(scope: str) -> float:
    return REGISTRY.get_sample_value("rate_limit_rejections_total", {"scope": scope}) or 0.0


def burn(client, n: int, path: str = ME) -> list:
    return [client.get(path) for _ in range(n)]


def test_free_tenant_trips_at_60_and_resets_in_the_next_window(frozen_clock):
    client = client_for(UserFactory(tenant=TenantFactory(tier=Tenant.Tier.FREE)))

    allowed = burn(client, 60)
    refused = client.get(ME)

    assert [r.status_code for r in allowed] == [200] * 60
    assert [r["X-RateLimit-Remaining"] for r in allowed[:2]] == ["59", "58"]
    assert allowed[-1]["X-RateLimit-Limit"] == "60" and allowed[-1]["X-RateLimit-Remaining"] == "0"
    assert refused.status_code == 429
    retry_after = int(refused["Retry-After"])
    assert 1 <= retry_after <= 60

    # Retry-After is exact: one second early is still the same window...
    frozen_clock.tick(dt.timedelta(seconds=retry_after - 1))
    assert client.get(ME).status_code == 429
    # ...and when it has passed the budget is whole again.
    frozen_clock.tick(dt.timedelta(seconds=1))
    fresh = client.get(ME)
    assert fresh.status_code == 200
    assert fresh["X-RateLimit-Remaining"] == "59"


def test_429_is_the_error_envelope_with_retry_after_and_is_counted(frozen_clock, settings):
    settings.RATE_LIMIT_FREE = 2
    client = client_for(UserFactory())
    burn(client, 2)
    before = rejections("tenant")

    response = client.get(ME)

    assert response.status_code == 429
    body = response.json()
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["request_id"] == response["X-Request-ID"]
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response["X-RateLimit-Limit"] == "2"
    assert response["X-RateLimit-Remaining"] == "0"
    assert rejections("tenant") == before + 1


@pytest.mark.parametrize(
    ("tier", "limit"), [(Tenant.Tier.FREE, "60"), (Tenant.Tier.STANDARD, "300"), (Tenant.Tier.ENTERPRISE, "600")]
)
def test_the_tier_sets_the_budget(tier, limit):
    client = client_for(UserFactory(tenant=TenantFactory(tier=tier)))

    response = client.get(ME)

    assert response.status_code == 200
    assert response["X-RateLimit-Limit"] == limit
    assert int(response["X-RateLimit-Remaining"]) == int(limit) - 1


def test_tier_limits_are_configurable(frozen_clock, settings):
    settings.RATE_LIMIT_STANDARD = 5
    client = client_for(UserFactory(tenant=TenantFactory(tier=Tenant.Tier.STANDARD)))

    statuses = [r.status_code for r in burn(client, 6)]

    assert statuses == [200] * 5 + [429]


def test_two_tenants_do_not_share_a_budget_but_colleagues_do(frozen_clock, settings):
    settings.RATE_LIMIT_FREE = 3
    tenant_a = TenantFactory()
    alice, colleague = UserFactory(tenant=tenant_a), UserFactory(tenant=tenant_a)
    bob = client_for(UserFactory(tenant=TenantFactory()))
    burn(client_for(alice), 3)

    colleague_response = client_for(colleague).get(ME)
    other_tenant_response = bob.get(ME)

    assert colleague_response.status_code == 429
    assert other_tenant_response.status_code == 200
    assert other_tenant_response["X-RateLimit-Remaining"] == "2"


def test_every_authenticated_api_response_carries_the_headers_even_errors():
    client = client_for(UserFactory(role="member"))

    forbidden = client.get("/api/v1/users")  # members may not list users: 403 after counting
    not_found = client.get("/api/v1/users/999999")

    for response in (forbidden, not_found):
        assert response.status_code in (403, 404)
        assert response["X-RateLimit-Limit"] == "60"


def test_auth_endpoints_are_limited_per_client_ip(frozen_clock):
    attempts = [
        client_for_ip("10.0.0.1").post(TOKEN, {"email": "x@example.com", "password": "wrong-password"}, format="json")
        for _ in range(20)
    ]
    blocked = client_for_ip("10.0.0.1").post(TOKEN, {"email": "x@example.com", "password": "p"}, format="json")
    other_ip = client_for_ip("10.0.0.2").post(TOKEN, {"email": "x@example.com", "password": "p"}, format="json")

    assert {r.status_code for r in attempts} == {401}
    assert attempts[0]["X-RateLimit-Limit"] == "20"
    assert attempts[-1]["X-RateLimit-Remaining"] == "0"
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "rate_limited"
    assert int(blocked["Retry-After"]) >= 1
    assert other_ip.status_code == 401


def test_register_shares_the_per_ip_budget(frozen_clock, settings):
    settings.RATE_LIMIT_AUTH_PER_IP = "2/m"
    client = client_for_ip("10.0.0.9")
    body = {"email": "a@example.com", "password": "analytical-engine-1843", "display_name": "A", "tenant_name": "A"}

    first = client.post("/api/v1/auth/register", body, format="json")
    second = client.post(TOKEN, {"email": "a@example.com", "password": "nope"}, format="json")
    third = client.post("/api/v1/auth/register", {**body, "email": "b@example.com"}, format="json")

    assert (first.status_code, second.status_code, third.status_code) == (201, 401, 429)
    assert Tenant.objects.count() == 1


def test_schema_is_not_part_of_the_ip_budget(settings):
    settings.RATE_LIMIT_AUTH_PER_IP = "1/m"
    client = client_for_ip("10.0.0.3")

    statuses = [client.get("/api/schema/").status_code for _ in range(3)]

    assert statuses == [200, 200, 200]


def test_tenant_usage_draws_on_the_same_budget_as_http(frozen_clock):
    user = UserFactory()

    looked = tenant_usage(user=user, increment=False)
    tenant_usage(user=user)
    tenant_usage(user=user)
    response = client_for(user).get(ME)

    assert (looked.limit, looked.remaining, looked.limited) == (60, 60, False)
    assert response["X-RateLimit-Remaining"] == "57"


def test_tenant_usage_reports_limited_with_retry_after(frozen_clock, settings):
    settings.RATE_LIMIT_FREE = 1
    user = UserFactory()
    before = rejections("tenant")

    first, second = tenant_usage(user=user), tenant_usage(user=user)

    assert not first.limited and first.remaining == 0
    assert second.limited and 1 <= second.retry_after <= 60
    assert second.headers()["Retry-After"] == str(second.retry_after)
    refused = second.error_response()
    assert refused.status_code == 429 and refused["Retry-After"] == str(second.retry_after)
    assert rejections("tenant") == before + 1


@pytest.mark.django_db(transaction=True)
def test_atenant_usage_works_from_async_code():
    user = UserFactory()

    usage = async_to_sync(atenant_usage)(user=user)

    assert (usage.limit, usage.remaining, usage.limited) == (60, 59, False)


def test_a_cache_outage_fails_open_by_default(settings):
    user = UserFactory()
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }

    response = client_for(user).get(ME)

    assert response.status_code == 200
    assert "X-RateLimit-Limit" not in response


def test_a_cache_outage_refuses_when_fail_closed(settings):
    user = UserFactory()
    settings.RATELIMIT_FAIL_OPEN = False
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }

    response = client_for(user).get(ME)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"


def test_limits_can_be_switched_off(settings):
    settings.RATELIMIT_ENABLE = False
    settings.RATE_LIMIT_FREE = 1
    client = client_for(UserFactory())

    statuses = [r.status_code for r in burn(client, 3)]

    assert statuses == [200, 200, 200]


def client_for_ip(ip: str):
    from rest_framework.test import APIClient

    return APIClient(REMOTE_ADDR=ip)
