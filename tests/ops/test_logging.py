"""What reaches the log: JSON lines through the configured handler, with no credential in
them (tokens in query strings, JWTs), whichever logger wrote the line."""

import io
import json
import logging
import time

import pytest
from django.test import Client

from accounts.services import tokens_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def log_lines():
    """The lines the configured console handler writes while the test runs."""
    (handler,) = [h for h in logging.getLogger().handlers if getattr(h, "name", "") == "console"]
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    finally:
        handler.setStream(previous)


@pytest.mark.urls("tests.ops.urls")
def test_a_failing_request_with_a_query_token_logs_no_token(log_lines):
    secret = "secret-query-token-0123456789"

    response = Client().get(f"/api/v1/test/boom?token={secret}&after_seq=2")

    assert response.status_code == 500
    lines = log_lines()
    loggers = {line["logger"] for line in lines}
    assert {"http.request", "django.request"} <= loggers  # the request line and Django's error line
    assert secret not in json.dumps(lines)
    (django_line,) = [line for line in lines if line["logger"] == "django.request"]
    assert "/api/v1/test/boom?token=[redacted]&after_seq=2" in django_line["request"]


def test_a_request_with_a_query_token_logs_its_path_without_it(user, log_lines):
    access = tokens_for(user).access

    response = Client().get(f"/api/v1/conversations/?token={access}", HTTP_AUTHORIZATION=f"Bearer {access}")

    assert response.status_code == 200
    (line,) = [line for line in log_lines() if line["logger"] == "http.request"]
    assert line["path"] == "/api/v1/conversations/"
    assert access not in json.dumps(log_lines())


def test_a_jwt_anywhere_in_a_line_is_redacted(log_lines, user):
    access = tokens_for(user).access

    logging.getLogger("anything").warning("could not use %s", access, extra={"detail": f"Bearer {access}"})

    (line,) = log_lines()
    assert access not in json.dumps(line)
    assert line["message"] == "could not use [redacted]"
    assert line["detail"] == "Bearer [redacted]"


def test_redaction_of_hostile_text_is_linear():
    """Log text comes from clients (paths up to 16 KB): a run of "eyJ" is scanned once, not
    once from every "eyJ" in it (24 KB took half a second). The bound is generous."""
    from config.api.logging import redact

    started = time.thread_time()  # CPU time: a loaded machine delays, it adds none
    redact("/api/" + "eyJ" * 100_000)
    redact("?token=" + "eyJa." * 50_000)
    assert time.thread_time() - started < 0.5
