"""/api/docs/ works on a machine without internet: Swagger UI comes from our own static files."""

import re
from html.parser import HTMLParser

import pytest
from django.core.management import call_command
from django.test import Client


class _AssetRefs(HTMLParser):
    """Every URL the page makes the browser fetch (script src, link href, img src)."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img") and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])


@pytest.fixture
def collected_static(settings, tmp_path):
    """What `make run` does before serving: collectstatic into STATIC_ROOT (here a temporary
    one), so the static files are answered the way the running server answers them."""
    settings.STATIC_ROOT = tmp_path / "staticfiles"
    call_command("collectstatic", "--noinput", verbosity=0)
    return settings.STATIC_ROOT


def test_docs_page_loads_swagger_ui_only_from_local_static_urls_that_answer(collected_static):
    client = Client()  # a new client: its middleware sees the collected files

    page = client.get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    parser = _AssetRefs()
    parser.feed(html)
    assert {url.rsplit("/", 1)[-1] for url in parser.urls} >= {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
    }
    # No CDN, no other host: nothing absolute anywhere in the page.
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", html), html
    for url in parser.urls:
        assert url.startswith("/static/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        # Iterating the response reads a streamed file whether its iterator is sync or async.
        assert b"".join(asset), url


def test_schema_the_docs_page_reads_is_served_locally():
    page = Client().get("/api/docs/").content.decode()
    schema_url = re.search(r'"(/api/schema/?)"', page).group(1)

    schema = Client().get(schema_url)

    assert schema.status_code == 200
    assert b"openapi:" in schema.content and b"/api/v1/chat" in schema.content
