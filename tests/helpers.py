"""Helpers shared by the test modules (fixtures stay in tests/conftest.py)."""

import threading
from concurrent.futures import ThreadPoolExecutor

from django.db import connection
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


def asgi_scope(path: str, token: str | None = None, *, method="GET", scheme="https", query=b"", headers=()) -> dict:
    """The HTTP scope of one request as the server hands it to the ASGI application
    (host ``testserver``), with a bearer ``token`` when given."""
    raw = [(b"host", b"testserver"), *headers]
    if token:
        raw.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 443 if scheme == "https" else 80),
    }


def run_together(n: int, call) -> list:
    """Runs ``call(i)`` in ``n`` threads released at once and returns their results in
    order (the first exception raised in a thread is raised here); each thread closes its
    own database connection."""
    barrier = threading.Barrier(n)

    def worker(i):
        try:
            barrier.wait(timeout=10)
            return call(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(worker, range(n)))
