"""Property-based fuzzing of the public API against its own OpenAPI schema (schemathesis).

Every operation in /api/schema/ gets a bounded, derandomized batch of generated requests
(valid and invalid) sent in-process through the WSGI app with a real bearer token. Each
response must not be a 5xx and must match the schema: documented status code, content type,
headers and body (including the error envelope for 4xx). Streaming paths (SSE) are not in
the fuzzed set.
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/", application).exclude(
    path_regex=r"/(stream|events)/?$",
)


@pytest.fixture
def bearer(db, settings):
    from accounts.services import tokens_for
    from tests.accounts.factories import TenantFactory, UserFactory

    # Hundreds of requests a minute from one tenant and one IP: the limiter is tested elsewhere.
    settings.RATELIMIT_ENABLE = False
    user = UserFactory(tenant=TenantFactory(), role="owner")
    # schemathesis calls the WSGI handler directly, which (unlike Django's test client) would
    # close the test transaction's connection at request end on PostgreSQL.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield f"Bearer {tokens_for(user).access}"
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# What the contract promises about responses. The input-precision checks
# (positive_data_acceptance, negative_data_rejection) are not run: server-side rules such as
# password strength or the Idempotency-Key alphabet are not expressible in this schema.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@schema.parametrize()
@hypothesis_settings(
    max_examples=15,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, bearer):
    case.call_and_validate(headers={"Authorization": bearer}, checks=CHECKS)
