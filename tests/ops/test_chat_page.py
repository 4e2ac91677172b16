"""The chat page at ``/`` as the server sends it (its behaviour in a browser is
tests/e2e/test_chat_page_browser.py): one self-contained HTML page, every field labelled,
nothing loaded from elsewhere, text never written as HTML."""

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def page():
    response = Client().get("/")
    assert response.status_code == 200
    return response


def test_the_page_is_html_for_anyone_without_a_session(page):
    assert page["Content-Type"].startswith("text/html")
    body = page.content.decode()
    assert '<html lang="en">' in body
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in body


def test_every_input_has_a_label(page):
    body = page.content.decode()
    inputs = re.findall(r'<input id="([^"]+)"', body)
    labelled = set(re.findall(r'<label for="([^"]+)"', body))

    assert {"sign-in-email", "sign-in-password", "register-email", "register-password", "text"} <= set(inputs)
    assert set(inputs) <= labelled


def test_the_page_loads_nothing_from_elsewhere_and_never_writes_html_from_data(page):
    body = page.content.decode()

    assert not re.search(r'(src|href)="(https?:)?//', body)
    assert "innerHTML" not in body and "insertAdjacentHTML" not in body and "document.write" not in body


def test_the_page_uses_the_public_contract(page):
    body = page.content.decode()

    for path in (
        "/api/v1/auth/register",
        "/api/v1/auth/token",
        "/api/v1/auth/token/refresh",
        "/api/v1/auth/logout",
        "/api/v1/auth/me",
        "/api/v1/conversations",
        "/ws/v1/conversations/",
        "after_seq=",
    ):
        assert path in body, path


def test_the_page_answers_a_signed_in_admin_too(admin_client):
    """A staff member's admin session cookie is not read by the page: the request log's
    middleware used to load that user in the event loop, and ``/`` answered 500."""
    response = admin_client.get("/")

    assert response.status_code == 200 and b"Sign in" in response.content
