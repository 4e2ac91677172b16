from django.db.models import QuerySet

from conversations.models import Message

from .models import AgentRun, Task


def task_list(*, user, status: str = "all") -> QuerySet[Task]:
    qs = Task.objects.for_tenant(user.tenant_id).filter(owner=user)
    if status == "pending":
        qs = qs.filter(completed=False)
    elif status == "completed":
        qs = qs.filter(completed=True)
    return qs.order_by("created_at", "id")


def task_find(*, user, task_id=None, title: str | None = None) -> Task | None:
    """One of the user's tasks by id, or by title: exact (any case) first, then the only
    task whose title contains it."""
    tasks = task_list(user=user)
    if task_id is not None:
        try:
            return tasks.filter(pk=int(task_id)).first()
        except (TypeError, ValueError):
            return None
    if not title:
        return None
    exact = tasks.filter(title__iexact=title.strip()).first()
    if exact:
        return exact
    partial = list(tasks.filter(title__icontains=title.strip())[:2])
    return partial[0] if len(partial) == 1 else None


def run_list(*, conversation) -> QuerySet[AgentRun]:
    # The run serializer shows message ids only: no join needed.
    return AgentRun.objects.filter(conversation=conversation)


_HISTORY_PAGE = 100


def history_of_first_message(message: Message, *, budget_chars: int) -> list[dict]:
    """``conversation_history`` of a conversation whose only message is ``message`` (a turn
    that began the conversation), without reading it back."""
    return [{"role": message.role, "content": message.content[-budget_chars:]}]


def conversation_history(*, conversation, upto_seq: int, budget_chars: int) -> list[dict]:
    """The user/assistant messages up to ``upto_seq`` that fit the budget, oldest first.
    The newest message is always included (cut to the budget if it alone is larger)."""
    history, used, below = [], 0, upto_seq + 1
    # Pages of plain queries, newest first, keyed on seq: a usual history is one SELECT (a
    # server-side cursor, as ``iterator()`` makes, costs DECLARE, FETCH and CLOSE).
    while True:
        page = list(
            Message.objects.filter(
                conversation=conversation, seq__lt=below, role__in=[Message.Role.USER, Message.Role.ASSISTANT]
            )
            .order_by("-seq")
            .values_list("seq", "role", "content")[:_HISTORY_PAGE]
        )
        for seq, role, content in page:
            if history and used + len(content) > budget_chars:
                history.reverse()
                return history
            history.append({"role": role, "content": content[-budget_chars:] if not history else content})
            used += len(content)
            below = seq
        if len(page) < _HISTORY_PAGE:
            history.reverse()
            return history
