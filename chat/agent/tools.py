"""The tool registry, shared by every provider. Tools act on the calling user's own tasks
through chat.services.todos and return JSON-able results (errors too, so the model can answer)."""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction

from chat import selectors
from chat.models import Task
from chat.services import todos

logger = logging.getLogger(__name__)


class InvalidArguments(Exception):
    """A tool call whose arguments do not fit the tool's schema; told back to the model."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict
    handler: Callable[..., dict]

    def schema(self) -> dict:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def task_data(task: Task) -> dict:
    return {"id": task.pk, "title": task.title, "completed": task.completed}


def _text(arguments: dict, name: str, *, required: bool = False) -> str | None:
    """A non-empty string argument (stripped), or None when absent and optional."""
    value = arguments.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidArguments(f"{name} must be a non-empty string.")
    return value.strip()


def _task_id(arguments: dict) -> int | None:
    value = arguments.get("task_id")
    if value is None:
        return None
    if isinstance(value, bool):  # bool is an int subclass; True is not task 1
        raise InvalidArguments("task_id must be an integer.")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise InvalidArguments("task_id must be an integer.")


def _find(user, arguments: dict) -> Task | dict:
    task_id, title = _task_id(arguments), _text(arguments, "title")
    if task_id is None and title is None:
        raise InvalidArguments("Give task_id or title.")
    task = selectors.task_find(user=user, task_id=task_id, title=title)
    if task is None:
        ref = task_id if task_id is not None else title
        return {"error": "not_found", "message": f"No task matches {ref!r}."}
    return task


def add_task(user, **arguments) -> dict:
    return {"task": task_data(todos.task_create(user=user, title=_text(arguments, "title", required=True)))}


def list_tasks(user, *, status: str = "all", **_) -> dict:
    if status not in ("all", "pending", "completed"):
        raise InvalidArguments("status must be one of all, pending, completed.")
    tasks = [task_data(t) for t in selectors.task_list(user=user, status=status)]
    return {"tasks": tasks, "count": len(tasks), "status": status}


def complete_task(user, **arguments) -> dict:
    found = _find(user, arguments)
    if isinstance(found, dict):
        return found
    return {"task": task_data(todos.task_update(task=found, user=user, completed=True))}


def update_task(user, **arguments) -> dict:
    new_title = _text(arguments, "new_title")
    completed = arguments.get("completed")
    if completed is not None and not isinstance(completed, bool):
        raise InvalidArguments("completed must be true or false.")
    found = _find(user, arguments)
    if isinstance(found, dict):
        return found
    return {"task": task_data(todos.task_update(task=found, user=user, title=new_title, completed=completed))}


def delete_task(user, **arguments) -> dict:
    found = _find(user, arguments)
    if isinstance(found, dict):
        return found
    data = task_data(found)
    todos.task_delete(task=found, user=user)
    return {"deleted": data}


_REF = {
    "task_id": {"type": "integer", "description": "The task's id, when known."},
    "title": {"type": "string", "description": "The task's title (or a distinctive part of it)."},
}

TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in [
        Tool(
            "add_task",
            "Add a task to the user's to-do list.",
            {
                "type": "object",
                "properties": {"title": {"type": "string", "description": "What to do."}},
                "required": ["title"],
            },
            add_task,
        ),
        Tool(
            "list_tasks",
            "List the user's tasks.",
            {
                "type": "object",
                "properties": {"status": {"type": "string", "enum": ["all", "pending", "completed"]}},
            },
            list_tasks,
        ),
        Tool(
            "complete_task",
            "Mark one of the user's tasks as done.",
            {"type": "object", "properties": _REF},
            complete_task,
        ),
        Tool(
            "update_task",
            "Rename a task or change whether it is done.",
            {
                "type": "object",
                "properties": {
                    **_REF,
                    "new_title": {"type": "string", "description": "The new title."},
                    "completed": {"type": "boolean"},
                },
            },
            update_task,
        ),
        Tool(
            "delete_task",
            "Delete one of the user's tasks.",
            {"type": "object", "properties": _REF},
            delete_task,
        ),
    ]
}


def tool_schemas() -> list[dict]:
    return [tool.schema() for tool in TOOLS.values()]


def tool_execute(*, user, name: str, arguments: dict) -> dict:
    """Runs a tool for the user. Never raises: unknown tools, bad arguments and failures
    come back as error results, so one bad call from the model cannot break the turn."""
    tool = TOOLS.get(name)
    if tool is None:
        return {"error": "unknown_tool", "message": f"There is no tool named {name!r}."}
    if not isinstance(arguments, dict):
        return {"error": "invalid_arguments", "message": "Arguments must be an object."}
    try:
        # A savepoint: a failing tool leaves no half-done writes and no broken transaction.
        with transaction.atomic():
            return tool.handler(user, **arguments)
    except InvalidArguments as exc:
        return {"error": "invalid_arguments", "message": str(exc)}
    except todos.TaskError as exc:
        return {"error": exc.code, "message": exc.message}
    except Exception:
        # A bug of ours, not the model's: logged with its traceback, answered generically.
        logger.exception("tool %s failed", name, extra={"tool": name})
        return {"error": "tool_failed", "message": "The tool failed."}
