"""Route labels in logs and metrics are templates (``/api/v1/conversations/{pk}``), never
the raw regex; made-up HTTP methods share one label value."""

import random
import string

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from config.api.routes import route_template
from tests.helpers import client_for

pytestmark = pytest.mark.django_db


def request_count(**labels) -> float:
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def method_labels() -> set[str]:
    return {
        sample.labels["method"]
        for metric in REGISTRY.collect()
        if metric.name == "http_requests"
        for sample in metric.samples
    }


@pytest.mark.parametrize(
    ("route", "template"),
    [
        ("api/v1/^auth/register/?$", "/api/v1/auth/register"),
        ("^health/?$", "/health"),
        ("", "/"),
        ("api/v1/^conversations/(?P<pk>[0-9]+)/events/?$", "/api/v1/conversations/{pk}/events"),
        ("api/v1/^conversations/(?P<pk>[^/.]+)/?$", "/api/v1/conversations/{pk}"),
        (r"api/^(?P<user_id>\d+)/chat/?$", "/api/{user_id}/chat"),
        ("admin/accounts/tenant/<path:object_id>/change/", "/admin/accounts/tenant/{object_id}/change/"),
        ("admin/^(?P<app_label>accounts|chat)/$", "/admin/{app_label}/"),
        (r"x/^export\.(?P<format>(json|csv))/?$", "/x/export.{format}"),
        (None, "<unmatched>"),
    ],
)
def test_route_template(route, template):
    assert route_template(route) == template


def test_router_route_with_a_pk_is_logged_and_counted_as_its_template(user, caplog):
    caplog.set_level("INFO", logger="http.request")
    api = client_for(user)
    conversation = api.post("/api/v1/conversations/", {"title": "t"}, format="json").json()
    labels = {"method": "GET", "route": "/api/v1/conversations/{pk}", "status": "200"}
    before = request_count(**labels)

    response = api.get(f"/api/v1/conversations/{conversation['id']}/")

    assert response.status_code == 200
    assert request_count(**labels) == before + 1
    (line,) = [r for r in caplog.records if r.name == "http.request" and r.method == "GET"]
    assert (line.path, line.route) == (f"/api/v1/conversations/{conversation['id']}/", "/api/v1/conversations/{pk}")


def test_the_chat_page_at_the_root_has_its_route(caplog):
    caplog.set_level("INFO", logger="http.request")
    before = request_count(method="GET", route="/", status="200")

    response = Client().get("/")

    assert response.status_code == 200
    assert request_count(method="GET", route="/", status="200") == before + 1
    (line,) = [r for r in caplog.records if r.name == "http.request"]
    assert line.route == "/"


def test_a_path_no_route_matches_stays_unmatched(api):
    before = request_count(method="GET", route="<unmatched>", status="404")

    assert api.get("/api/v1/no-such-thing").status_code == 404

    assert request_count(method="GET", route="<unmatched>", status="404") == before + 1


def test_fifty_made_up_methods_add_at_most_one_method_label():
    rng = random.Random(9)
    methods = {"".join(rng.choices(string.ascii_uppercase, k=10)) for _ in range(50)}
    before = method_labels()
    client = Client()

    other_before = request_count(method="other", route="/api/v1/auth/me", status="401")

    for method in methods:
        response = client.generic(method, "/api/v1/auth/me")
        assert response.status_code == 401

    added = method_labels() - before
    assert added <= {"other"}
    assert request_count(method="other", route="/api/v1/auth/me", status="401") == other_before + len(methods)
