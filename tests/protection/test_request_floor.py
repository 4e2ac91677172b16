"""What every request pays before its view (issue 11, the /health target): our middleware is
one layer, the message storage and the CORS headers cost nothing a request does not use, and
the request log line skips work no field needs. Each keeps the behaviour it replaced.
See docs/overhead.md, "Third round: the request floor"."""

import logging

import pytest
from corsheaders.middleware import CorsMiddleware
from django.contrib import messages
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django.utils.functional import empty

from config.api.logging import redact
from config.api.native import InlineCorsMiddleware, InlineMessageMiddleware, InlineSessionMiddleware

pytestmark = pytest.mark.django_db

ALLOWED = "https://app.example.com"


def test_our_middleware_is_one_layer(settings):
    ours = [path for path in settings.MIDDLEWARE if path.startswith("config.api.middleware.")]
    assert ours == ["config.api.middleware.ApiMiddleware"]
    assert settings.MIDDLEWARE[0] == "config.api.middleware.ApiMiddleware"  # outermost: sees every error


class Boom:
    """A middleware below ours that fails."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raise RuntimeError("a middleware failed")


def test_an_error_raised_in_a_middleware_below_is_the_envelope_with_the_request_id(settings):
    settings.MIDDLEWARE = [settings.MIDDLEWARE[0], f"{__name__}.Boom", *settings.MIDDLEWARE[1:]]

    response = Client(raise_request_exception=False).get("/api/v1/auth/me", HTTP_X_REQUEST_ID="req-boom")

    assert response.status_code == 500
    assert response["Content-Type"].startswith("application/json")
    body = response.json()["error"]
    assert body["code"] == "internal_error" and body["request_id"] == "req-boom"
    assert response["X-Request-ID"] == "req-boom"


def test_a_counted_429_carries_the_rate_limit_headers_and_the_request_id(user, settings):
    from tests.helpers import client_for

    settings.RATE_LIMIT_FREE = 1
    api = client_for(user)
    api.get("/api/v1/auth/me")

    refused = api.get("/api/v1/auth/me", HTTP_X_REQUEST_ID="req-429")

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused["X-RateLimit-Limit"] == "1" and refused["X-RateLimit-Remaining"] == "0"
    assert int(refused["Retry-After"]) >= 1
    assert refused["X-Request-ID"] == "req-429"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/health", {}),
        ("/health", {"HTTP_ORIGIN": ALLOWED}),
        ("/health", {"HTTP_ORIGIN": "https://evil.example.net"}),
        ("/api/v1/auth/me", {}),
        ("/api/v1/auth/me", {"HTTP_ORIGIN": ALLOWED}),
        ("/", {}),
        ("/", {"HTTP_ORIGIN": ALLOWED}),
    ],
)
def test_cors_headers_are_corsheaders_own_with_and_without_an_origin(settings, path, headers):
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]

    def answer(request):
        return HttpResponse("ok")

    results = []
    for cls in (CorsMiddleware, InlineCorsMiddleware):
        request = RequestFactory().get(path, **headers)
        response = cls(answer)(request)
        results.append(sorted((k.lower(), v) for k, v in response.items()))

    assert results[0] == results[1]


def test_a_request_without_origin_gets_vary_origin_and_no_grant():
    response = Client().get("/health")

    assert response.status_code == 200
    assert "origin" in response["Vary"].lower()
    assert "Access-Control-Allow-Origin" not in response


def _session_and_messages(view):
    return InlineSessionMiddleware(InlineMessageMiddleware(view))


def test_the_message_storage_is_built_only_when_a_request_uses_it():
    seen = {}

    def untouched(request):
        seen["storage"] = request._messages
        return HttpResponse("ok")

    response = _session_and_messages(untouched)(RequestFactory().get("/"))

    assert seen["storage"]._wrapped is empty  # never built
    assert "messages" not in response.cookies and "sessionid" not in response.cookies


def test_a_message_added_is_stored_and_read_on_the_next_request():
    def add(request):
        messages.info(request, "saved")
        return HttpResponse("ok")

    stored = _session_and_messages(add)(RequestFactory().get("/"))
    assert "messages" in stored.cookies

    read = []

    def show(request):
        read.extend(str(message) for message in messages.get_messages(request))
        return HttpResponse("ok")

    next_request = RequestFactory().get("/")
    next_request.COOKIES["messages"] = stored.cookies["messages"].value
    after = _session_and_messages(show)(next_request)

    assert read == ["saved"]
    assert after.cookies["messages"].value == ""  # consumed: the cookie is cleared


def test_a_line_with_nothing_to_redact_is_returned_as_is_and_credentials_still_go():
    line = '{"message": "request", "path": "/health", "status": 200}'
    assert redact(line) is line
    assert redact('{"path": "/x?token=abc"}') == '{"path": "/x?token=[redacted]"}'
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    assert redact(f"Bearer {jwt}") == "Bearer [redacted]"


def test_the_request_line_is_logged_once_with_its_fields(caplog):
    caplog.set_level(logging.INFO, logger="http.request")

    Client().get("/health", HTTP_X_REQUEST_ID="req-health")

    (record,) = [r for r in caplog.records if r.name == "http.request"]
    assert record.getMessage() == "request"
    assert (record.method, record.path, record.route, record.status) == ("GET", "/health", "/health", 200)
    assert record.request_id == "req-health" and record.user_id is None and record.tenant_id is None
    assert record.duration_ms >= 0


def test_request_metrics_count_each_request(user):
    from prometheus_client import REGISTRY

    labels = {"method": "GET", "route": "/health", "status": "200"}
    before = REGISTRY.get_sample_value("http_requests_total", labels) or 0.0

    Client().get("/health")
    Client().get("/health")

    assert REGISTRY.get_sample_value("http_requests_total", labels) == before + 2
