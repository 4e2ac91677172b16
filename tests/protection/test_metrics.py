import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.celery import app
from tests.helpers import client_for

pytestmark = pytest.mark.django_db

ME_ROUTE = "/api/v1/auth/me"


@app.task(name="tests.protection.succeed")
def succeed():
    return "ok"


@app.task(name="tests.protection.fail")
def fail():
    raise RuntimeError("task failed on purpose")


@app.task(name="tests.protection.retry_once", bind=True, max_retries=1)
def retry_once(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "ok after a retry"


def scrape(api) -> dict[tuple[str, tuple], float]:
    """/metrics parsed with Prometheus' own parser: {(sample name, sorted labels): value}."""
    response = api.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_parse_and_count_a_request_by_route_template_and_status(api, user):
    client = client_for(user)
    before = scrape(api)

    client.get("/api/v1/auth/me")
    client.get("/api/v1/auth/me/")
    after = scrape(api)

    labels = {"method": "GET", "route": ME_ROUTE}
    assert value(after, "http_requests_total", **labels, status="200") == (
        value(before, "http_requests_total", **labels, status="200") + 2
    )
    assert value(after, "http_request_duration_seconds_count", **labels) == (
        value(before, "http_request_duration_seconds_count", **labels) + 2
    )


def test_rate_limit_rejections_and_idempotent_replays_are_counted(api, user, settings, frozen_clock):
    # Four requests against a budget of three must fall in one window: with the real clock
    # the tenant's window sometimes turned mid-test and the fourth was allowed.
    settings.RATE_LIMIT_FREE = 3
    client = client_for(user)
    body = {"email": "grace@example.com", "password": "cobol-compiler-1959", "display_name": "Grace"}
    before = scrape(api)

    client.post("/api/v1/users", body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    client.post("/api/v1/users", body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    client.get("/api/v1/auth/me")
    refused = client.get("/api/v1/auth/me")
    after = scrape(api)

    assert refused.status_code == 429
    assert value(after, "idempotent_replays_total") == value(before, "idempotent_replays_total") + 1
    assert value(after, "rate_limit_rejections_total", scope="tenant") == (
        value(before, "rate_limit_rejections_total", scope="tenant") + 1
    )
    assert value(after, "http_requests_total", method="GET", route=ME_ROUTE, status="429") == (
        value(before, "http_requests_total", method="GET", route=ME_ROUTE, status="429") + 1
    )


def test_celery_task_outcomes_are_counted(api):
    before = scrape(api)

    succeed.delay()
    fail.delay()
    retry_once.delay()
    after = scrape(api)

    def delta(task, outcome):
        return value(after, "celery_tasks_total", task=task, outcome=outcome) - value(
            before, "celery_tasks_total", task=task, outcome=outcome
        )

    assert delta("tests.protection.succeed", "success") == 1
    assert delta("tests.protection.fail", "failure") == 1
    assert delta("tests.protection.fail", "success") == 0
    assert delta("tests.protection.retry_once", "retry") == 1
    assert delta("tests.protection.retry_once", "success") == 1


def test_every_named_series_is_exported(api):
    names = {family.name for family in text_string_to_metric_families(api.get("/metrics").content.decode())}

    assert {
        "http_requests",
        "http_request_duration_seconds",
        "agent_runs",
        "agent_run_duration_seconds",
        "celery_tasks",
        "websocket_connections_open",
        "rate_limit_rejections",
        "idempotent_replays",
    } <= names


def test_metrics_token_is_required_when_set(api, settings):
    settings.METRICS_TOKEN = "s3cret"

    refused = api.get("/metrics")
    wrong = api.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    allowed = api.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")

    assert refused.status_code == wrong.status_code == 401
    assert refused.json()["error"]["code"] == "not_authenticated"
    assert allowed.status_code == 200
