"""Issue 5 end to end: what a Celery worker's pool process counts (task outcomes, agent
runs) is scraped from the worker's own Prometheus endpoint (CELERY_METRICS_PORT), summed
over its pool processes by prometheus_client's multiprocess mode."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import wait_for
from .test_realtime_e2e import DEADLINE, _client, _new_conversation, _post_message, _settled

pytestmark = pytest.mark.timeout(90)


def _samples(url: str) -> dict[tuple, float]:
    response = httpx.get(url, timeout=5, trust_env=False)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_worker_serves_task_and_agent_run_metrics_of_its_pool_processes(server, account):
    server.fake.reply("Counted.")
    http = _client(server, account)
    task_success = ("celery_tasks_total", (("outcome", "success"), ("task", "chat.tasks.run_agent_task")))
    runs_completed = ("agent_runs_total", (("outcome", "completed"), ("provider", "openai")))
    run_latency = ("agent_run_duration_seconds_count", (("provider", "openai"),))
    before = _samples(server.worker_metrics_url)
    assert before.get(task_success, 0) == 0

    run_id = _post_message(http, _new_conversation(http), "count me")["run"]["id"]
    run = wait_for(lambda: _settled(run_id), timeout=DEADLINE, what="the run to settle")
    assert run.status == "completed"

    # task_success is sent after the run is stored: poll until the pool process counted it.
    after = wait_for(
        lambda: (samples := _samples(server.worker_metrics_url)).get(task_success, 0) >= 1 and samples,
        timeout=5,
        what="celery_tasks_total on the worker's endpoint",
    )
    assert after[runs_completed] >= 1
    assert after[run_latency] >= 1
    # The web process's /metrics did not run the task and does not count it.
    web = _samples(f"{server.base_url}/metrics")
    assert web.get(task_success, 0) == 0
