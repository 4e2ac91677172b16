"""The user's to-do items (``Task`` rows): what ``/api/v1/tasks`` and the agent's tools
change. Nothing here knows of turns or runs."""

from django.db import transaction
from django.utils import timezone

from audits.services import audit_record
from config.core.errors import ApplicationError

from ..models import Task


class TaskError(ApplicationError):
    code = "validation_error"


def _clean_title(title) -> str:
    title = (title or "").strip() if isinstance(title, str) else ""
    if not title:
        raise TaskError("A task needs a title.", details={"title": ["required"]})
    if len(title) > 500:
        raise TaskError("A task title is at most 500 characters.", details={"title": ["too long"]})
    return title


def task_create(*, user, title: str, completed: bool = False) -> Task:
    """A task of ``user``'s, possibly already done: one row, one ``task.created`` record."""
    completed, title = bool(completed), _clean_title(title)
    # Validated above, so no savepoint when nested (the agent's tool call holds its own).
    with transaction.atomic(savepoint=False):
        task = Task.objects.create(
            tenant_id=user.tenant_id,
            owner=user,
            title=title,
            completed=completed,
            completed_at=timezone.now() if completed else None,
        )
        audit_record(
            tenant=user.tenant,
            actor=user,
            action="task.created",
            resource_type="task",
            resource_id=task.pk,
            details={"title": task.title, "completed": completed},
        )
    return task


@transaction.atomic
def task_update(*, task: Task, user, title: str | None = None, completed: bool | None = None) -> Task:
    fields = []
    if title is not None:
        task.title = _clean_title(title)
        fields.append("title")
    if completed is not None and completed != task.completed:
        task.completed = bool(completed)
        task.completed_at = timezone.now() if task.completed else None
        fields += ["completed", "completed_at"]
    if fields:
        task.updated_at = timezone.now()
        task.save(update_fields=[*fields, "updated_at"])
        audit_record(
            tenant=user.tenant,
            actor=user,
            action="task.updated",
            resource_type="task",
            resource_id=task.pk,
            details={"fields": sorted(set(fields) - {"completed_at"})},
        )
    return task


@transaction.atomic
def task_delete(*, task: Task, user) -> None:
    task_id, title = task.pk, task.title
    task.delete()
    audit_record(
        tenant=user.tenant,
        actor=user,
        action="task.deleted",
        resource_type="task",
        resource_id=task_id,
        details={"title": title},
    )
