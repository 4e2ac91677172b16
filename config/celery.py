"""The Celery app. Tasks carry the request id of the request that enqueued them."""

import os
import shutil
import sys
import tempfile

from celery import Celery
from celery.signals import (
    before_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_success,
    worker_init,
    worker_process_shutdown,
    worker_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

if os.path.basename(sys.argv[0]) == "celery":
    # The worker's own process (`celery -A config ...`): a configuration mistake is one line
    # and exit 1, as for manage.py and the web (config/startup.py), not a traceback from
    # inside Celery's lazy settings. Other importers load the settings their own way.
    from config import startup

    startup.load_settings_or_exit()

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@before_task_publish.connect
def _attach_request_id(headers=None, **_):
    from config.core.context import current_request_id

    request_id = current_request_id()
    if headers is not None and request_id and "request_id" not in headers:
        headers["request_id"] = request_id


@task_prerun.connect
def _restore_request_id(task=None, **_):
    from config.core.context import new_request_id, request_id_var

    request_id = getattr(task.request, "request_id", None) or (task.request.headers or {}).get("request_id")
    task._request_id_token = request_id_var.set(request_id or new_request_id())


@task_postrun.connect
def _clear_request_id(task=None, **_):
    from config.core.context import request_id_var

    token = getattr(task, "_request_id_token", None)
    if token is not None:
        try:
            request_id_var.reset(token)
        except ValueError:
            request_id_var.set(None)


# Task outcomes for Prometheus (celery_tasks_total{task, outcome}), counted in the process
# that ran the task: the web process's /metrics when tasks run eagerly (embedded mode), the
# worker's own endpoint (CELERY_METRICS_PORT, below) when a separate worker runs them.
@task_success.connect
def _count_success(sender=None, **_):
    _count(sender, "success")


@task_failure.connect
def _count_failure(sender=None, **_):
    _count(sender, "failure")


@task_retry.connect
def _count_retry(sender=None, **_):
    _count(sender, "retry")


def _count(task, outcome: str) -> None:
    from config.core.metrics import CELERY_TASKS

    CELERY_TASKS.labels(getattr(task, "name", None) or "unknown", outcome).inc()


# The worker's metrics endpoint (CELERY_METRICS_PORT). Tasks run in prefork pool processes,
# so what they count lives there, not in daphne's /metrics nor in the worker's main process.
# prometheus_client's multiprocess mode has every process write its samples to mmap files
# in one directory; the main process serves their sum. Daphne never sends these signals and
# stays in single-process mode.
_worker_metrics: dict = {}


@worker_init.connect
def _serve_worker_metrics(**_):
    """Runs in the worker's main process once, before the pool forks: the children inherit
    the multiprocess set-up, and only this process listens on the port."""
    from django.conf import settings

    if not settings.CELERY_METRICS_PORT:
        return
    from prometheus_client import CollectorRegistry, start_http_server, values
    from prometheus_client.multiprocess import MultiProcessCollector

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        # A fresh directory per worker run: stale files of an earlier run would be summed in.
        path = tempfile.mkdtemp(prefix="celery-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        _worker_metrics["owned_dir"] = path
    if values.ValueClass is values.MutexValue:
        # prometheus_client chooses its value class from PROMETHEUS_MULTIPROC_DIR when it is
        # imported, which Django's set-up has done by now. Labelled series create their values
        # on first .labels(), through values.ValueClass, so choosing again here puts every
        # sample a task records into the directory, provided none was recorded before.
        _assert_no_task_samples_yet()
        values.ValueClass = values.get_value_class()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    server, _thread = start_http_server(
        settings.CELERY_METRICS_PORT, addr=settings.CELERY_METRICS_ADDR, registry=registry
    )
    _worker_metrics["server"] = server


def _assert_no_task_samples_yet() -> None:
    from config.core import metrics

    for metric in (metrics.CELERY_TASKS, metrics.AGENT_RUNS, metrics.AGENT_RUN_LATENCY):
        for family in metric.collect():
            if family.samples:
                raise RuntimeError(f"{family.name} was recorded before multiprocess mode: it would not be exported")


@worker_process_shutdown.connect
def _forget_pool_process(pid=None, **_):
    # Drops the exited process's live gauges; its counters and histograms stay summed in.
    if pid and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


@worker_shutdown.connect
def _stop_worker_metrics(**_):
    server = _worker_metrics.pop("server", None)
    if server is not None:
        server.shutdown()
        server.server_close()
    path = _worker_metrics.pop("owned_dir", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
