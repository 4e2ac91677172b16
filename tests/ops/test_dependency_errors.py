"""An unreachable dependency is a 503 dependency_unavailable with Retry-After, not a 500."""

import pytest
from django.test import Client

from tests.helpers import assert_envelope

pytestmark = pytest.mark.django_db


@pytest.mark.urls("tests.ops.fault_urls")
@pytest.mark.parametrize("view", ["plain-outage", "drf-outage"])
@pytest.mark.parametrize(
    ("kind", "dependency"),
    [("database", "database"), ("pool", "database"), ("redis", "redis"), ("broker", "broker")],
)
def test_unreachable_dependency_is_503_with_retry_after(view, kind, dependency):
    client = Client(raise_request_exception=False)

    response = client.get(f"/api/v1/test/{view}/{kind}")

    error = assert_envelope(response, 503, "dependency_unavailable")
    assert error["details"] == {"dependency": dependency}
    assert int(response["Retry-After"]) >= 1
