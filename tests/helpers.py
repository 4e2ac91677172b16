"""Helpers shared by the test modules (fixtures stay in tests/conftest.py)."""

from rest_framework.test import APIClient


def assert_error(response, status: int, code: str) -> dict:
    """``response`` is the error envelope with this status and code, carrying the request's
    id; returns the ``error`` object for further checks."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == response["X-Request-ID"]
    return body["error"]


def assert_envelope(response, status: int, code: str) -> dict:
    """``assert_error`` for errors Django or a middleware answers: also JSON by its
    Content-Type, and no trace of an internal message (``secret``) in the body."""
    error = assert_error(response, status, code)
    assert response["Content-Type"].startswith("application/json")
    assert "secret" not in response.content.decode()
    return error


def client_for(user) -> APIClient:
    """An API client authenticated as ``user`` with a fresh access token."""
    from accounts.services import tokens_for

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_for(user).access}")
    return client
