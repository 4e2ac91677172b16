"""The Celery app. Tasks carry the request id of the request that enqueued them."""

import os

from celery import Celery
from celery.signals import before_task_publish, task_failure, task_postrun, task_prerun, task_retry, task_success

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@before_task_publish.connect
def _attach_request_id(headers=None, **_):
    from config.api.context import current_request_id

    request_id = current_request_id()
    if headers is not None and request_id and "request_id" not in headers:
        headers["request_id"] = request_id


@task_prerun.connect
def _restore_request_id(task=None, **_):
    from config.api.context import new_request_id, request_id_var

    request_id = getattr(task.request, "request_id", None) or (task.request.headers or {}).get("request_id")
    task._request_id_token = request_id_var.set(request_id or new_request_id())


@task_postrun.connect
def _clear_request_id(task=None, **_):
    from config.api.context import request_id_var

    token = getattr(task, "_request_id_token", None)
    if token is not None:
        try:
            request_id_var.reset(token)
        except ValueError:
            request_id_var.set(None)


# Task outcomes for Prometheus (celery_tasks_total{task, outcome}), counted in the process
# that ran the task: the web process's /metrics when tasks run eagerly (embedded mode). A
# separate worker keeps its own counts; exporting them needs prometheus_client's
# multiprocess mode or an exporter in the worker (not set up yet, see docs/protection.md).
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
    from config.api.metrics import CELERY_TASKS

    CELERY_TASKS.labels(getattr(task, "name", None) or "unknown", outcome).inc()
