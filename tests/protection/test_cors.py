import pytest

from tests.helpers import client_for

pytestmark = pytest.mark.django_db

ALLOWED = "https://app.example.com"


@pytest.fixture(autouse=True)
def production_cors(settings):
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]


def preflight(api, origin, method="POST", headers="authorization,content-type,idempotency-key"):
    return api.options(
        "/api/v1/conversations",
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD=method,
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS=headers,
    )


def test_preflight_from_an_allowed_origin_is_granted(api):
    response = preflight(api, ALLOWED)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed_headers = response["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "idempotency-key", "x-request-id"} <= set(allowed_headers.split(", "))


def test_preflight_from_another_origin_gets_no_grant(api):
    response = preflight(api, "https://evil.example.net")

    assert "Access-Control-Allow-Origin" not in response


def test_responses_expose_request_id_and_rate_limit_headers(user):
    response = client_for(user).get("/api/v1/auth/me", HTTP_ORIGIN=ALLOWED)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    exposed = {name.strip().lower() for name in response["Access-Control-Expose-Headers"].split(",")}
    assert {
        "x-request-id",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "retry-after",
        "idempotent-replayed",
    } <= exposed
    assert response["X-RateLimit-Limit"] == "60"


def test_development_default_allows_any_origin(api, settings):
    settings.CORS_ALLOW_ALL_ORIGINS = True

    response = preflight(api, "http://localhost:5173")

    assert response["Access-Control-Allow-Origin"] in ("*", "http://localhost:5173")
