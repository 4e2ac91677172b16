"""The tool registry, shared by every provider. Tools act on the calling user's own tasks
through chat.services and return JSON-able results (errors too, so the model can answer)."""

from collections.abc import Callable
from dataclasses import dataclass

from chat import selectors, services
from chat.models import Task


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


def _find(user, arguments: dict) -> Task | dict:
    task = selectors.task_find(user=user, task_id=arguments.get("task_id"), title=arguments.get("title"))
    if task is None:
        ref = arguments.get("task_id") or arguments.get("title") or "?"
        return {"error": "not_found", "message": f"No task matches {ref!r}."}
    return task


def add_task(user, *, title: str, **_) -> dict:
    return {"task": task_data(services.task_create(user=user, title=title))}


def list_tasks(user, *, status: str = "all", **_) -> dict:
    tasks = [task_data(t) for t in selectors.task_list(user=user, status=status)]
    return {"tasks": tasks, "count": len(tasks), "status": status}


def complete_task(user, **arguments) -> dict:
    found = _find(user, arguments)
    if isinstance(found, dict):
        return found
    return {"task": task_data(services.task_update(task=found, user=user, completed=True))}


def update_task(user, *, new_title: str | None = None, completed: bool | None = None, **arguments) -> dict:
    found = _find(user, arguments)
    if isinstance(found, dict):
        return found
    return {"task": task_data(services.task_update(task=found, user=user, title=new_title, completed=completed))}


def delete_task(user, **arguments) -> dict:
    found = _find(user, arguments)
    if isinstance(found, dict):
        return found
    data = task_data(found)
    services.task_delete(task=found, user=user)
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
    """Runs a tool for the user. Unknown tools and bad arguments come back as error results."""
    tool = TOOLS.get(name)
    if tool is None:
        return {"error": "unknown_tool", "message": f"There is no tool named {name!r}."}
    if not isinstance(arguments, dict):
        return {"error": "invalid_arguments", "message": "Arguments must be an object."}
    try:
        return tool.handler(user, **arguments)
    except TypeError as exc:
        return {"error": "invalid_arguments", "message": str(exc)}
    except services.TaskError as exc:
        return {"error": exc.code, "message": exc.message}
