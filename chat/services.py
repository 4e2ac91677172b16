"""Chat turns and tasks. One service runs a turn; the sync endpoint, the SSE stream, the
Celery task and the WebSocket consumer differ only in how they deliver its events."""

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.services import audit_record
from config.api import metrics
from config.api.errors import ApplicationError, ServiceUnavailable
from conversations import selectors as conversation_selectors
from conversations import services as conversation_services
from conversations.events import Publisher
from conversations.models import Conversation, Message

from . import selectors
from .agent.providers import get_provider
from .agent.runner import run_agent
from .agent.types import ProviderError
from .models import AgentRun, Task

logger = logging.getLogger(__name__)


class TaskError(ApplicationError):
    code = "validation_error"


class AgentUnavailable(ServiceUnavailable):
    code = "agent_unavailable"


class TurnCancelled(Exception):
    """The listener that ran the turn went away (an SSE client disconnected)."""


# ---------------------------------------------------------------- tasks


def _clean_title(title) -> str:
    title = (title or "").strip() if isinstance(title, str) else ""
    if not title:
        raise TaskError("A task needs a title.", details={"title": ["required"]})
    if len(title) > 500:
        raise TaskError("A task title is at most 500 characters.", details={"title": ["too long"]})
    return title


@transaction.atomic
def task_create(*, user, title: str, completed: bool = False) -> Task:
    """A task of ``user``'s, possibly already done: one row, one ``task.created`` record."""
    completed = bool(completed)
    task = Task.objects.create(
        tenant_id=user.tenant_id,
        owner=user,
        title=_clean_title(title),
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


# ---------------------------------------------------------------- chat turns


@dataclass
class Turn:
    conversation: Conversation
    message: Message
    run: AgentRun
    # False when a resent client_message_id returned a turn stored earlier.
    created: bool = True


def turn_begin(
    *, user, content: str, conversation_id=None, attachments: list | None = None, client_message_id: str | None = None
) -> Turn:
    """Stores the user's message and a queued run for it, and commits, before any agent
    work: whatever happens to the agent, the message is kept. No ``conversation_id``
    starts a new conversation; an unknown or foreign one is 404. Resending a
    ``client_message_id`` returns the stored turn instead of a second one."""
    conversation_services.check_content(content)
    provider = get_provider()
    with transaction.atomic():
        if conversation_id is None:
            conversation = conversation_services.conversation_create(user=user, title=_title_from(content))
        else:
            conversation = conversation_selectors.conversation_get(
                tenant=user.tenant_id, user=user, conversation_id=conversation_id
            )
        message, created = conversation_services.message_send(
            conversation=conversation,
            user=user,
            content=content,
            attachments=attachments,
            client_message_id=client_message_id,
        )
        run = None if created else message.triggered_runs.order_by("-id").first()
        if run is None:
            run = AgentRun.objects.create(
                tenant_id=user.tenant_id,
                conversation=conversation,
                user=user,
                trigger_message=message,
                provider=provider.name,
                model=provider.model,
            )
    return Turn(conversation=conversation, message=message, run=run, created=created)


def _title_from(content: str) -> str:
    first_line = " ".join(content.split())
    return first_line if len(first_line) <= 60 else first_line[:59] + "…"


def _lease_seconds() -> int:
    """How long a claim on a running run holds: past the task time limit its holder is dead."""
    return settings.CELERY_TASK_TIME_LIMIT + 60


def _claim(*, run_id: int, claim: str | None) -> tuple[AgentRun, str | None]:
    """Takes the run for this execution: (run, claim) when it is ours to run, (run, None)
    when it is settled, held by another live execution, or just failed for lack of attempts.

    A queued run is free. A running one may be taken over only by a redelivery of the
    same Celery task (its worker died) or once its lease has lapsed.
    """
    with transaction.atomic():
        run = (
            AgentRun.objects.select_for_update(of=("self",))
            .select_related("conversation", "trigger_message", "user__tenant")
            .get(pk=run_id)
        )
        if run.status in (AgentRun.Status.COMPLETED, AgentRun.Status.FAILED):
            return run, None
        if run.status == AgentRun.Status.RUNNING:
            redelivered = claim is not None and run.claimed_by == claim
            lapsed = run.started_at is None or run.started_at < timezone.now() - timedelta(seconds=_lease_seconds())
            if not (redelivered or lapsed):
                return run, None  # another execution is running it right now
            if run.attempts >= settings.AGENT_MAX_ATTEMPTS:
                # A turn that kills its worker must not be redelivered forever.
                run_fail(run=run, error="the worker running this turn was lost")
                return run, None
        run.status = AgentRun.Status.RUNNING
        run.claimed_by = claim or f"request:{uuid.uuid4().hex}"
        run.started_at = timezone.now()
        run.attempts += 1
        run.save(update_fields=["status", "claimed_by", "started_at", "attempts"])
    return run, run.claimed_by


def _still_ours(run: AgentRun) -> bool:
    """Locks the run row (in the caller's transaction) and says whether we still hold it."""
    current = AgentRun.objects.select_for_update(of=("self",)).only("status", "claimed_by").get(pk=run.pk)
    return current.status == AgentRun.Status.RUNNING and current.claimed_by == run.claimed_by


def run_execute(
    *, run_id: int, sink=None, allow_retry: bool = False, cancel=None, claim: str | None = None
) -> AgentRun:
    """Runs the agent for a queued run and stores its reply.

    Events go to the conversation's group (and to ``sink`` when given). ``claim`` names this
    execution (the Celery task id); a run settled, or held by another live execution, is
    returned as it is, so duplicate or redelivered tasks never answer twice. On a provider
    failure the run is marked failed and ``AgentUnavailable`` is raised; with
    ``allow_retry`` a transient failure puts the run back in the queue and re-raises the
    ``ProviderError`` for the caller to retry. When ``cancel`` (a ``threading.Event``) is
    set the turn stops at its next event and the run is marked failed as cancelled. Any
    other error fails the run and propagates.
    """
    run, claim = _claim(run_id=run_id, claim=claim)
    if claim is None:
        return run

    # Lost workers use attempts too (a redelivery does not count as a Celery retry).
    allow_retry = allow_retry and run.attempts < settings.AGENT_MAX_ATTEMPTS
    publisher = Publisher(run.conversation_id, sink=sink)
    handle = {"run_id": run.pk, "in_reply_to": run.trigger_message_id}
    publisher.emit("run.started", {**handle, "provider": run.provider, "model": run.model, "attempt": run.attempts})
    started = time.perf_counter()

    def emit(kind: str, data: dict) -> None:
        if cancel is not None and cancel.is_set():
            raise TurnCancelled()
        publisher.emit(kind, {**handle, **data})

    try:
        history = selectors.conversation_history(
            conversation=run.conversation, upto_seq=run.trigger_message.seq, budget_chars=settings.AGENT_HISTORY_CHARS
        )
        result = run_agent(
            provider=get_provider(),
            user=run.user,
            history=history,
            emit=emit,
            max_rounds=settings.AGENT_MAX_TOOL_ROUNDS,
        )
    except TurnCancelled:
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        run_fail(run=run, error="cancelled: the client went away", latency_ms=elapsed_ms, publisher=publisher)
        return run
    except ProviderError as exc:
        elapsed = time.perf_counter() - started
        if allow_retry and exc.transient:
            AgentRun.objects.filter(pk=run.pk, status=AgentRun.Status.RUNNING, claimed_by=claim).update(
                status=AgentRun.Status.QUEUED, claimed_by="", queued_at=timezone.now(), error=str(exc)[:2000]
            )
            metrics.observe_agent_run(run.provider, "retried", elapsed)
            raise
        run_fail(run=run, error=str(exc), latency_ms=int(elapsed * 1000), publisher=publisher)
        raise AgentUnavailable(
            "The assistant is unavailable right now; your message was kept.",
            details={"conversation_id": run.conversation_id, "message_id": run.trigger_message_id, "run_id": run.pk},
        ) from exc
    except Exception as exc:
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        run_fail(run=run, error=f"internal error: {type(exc).__name__}", latency_ms=elapsed_ms, publisher=publisher)
        raise

    elapsed = time.perf_counter() - started
    with transaction.atomic():
        if not _still_ours(run):
            # Our lease lapsed and another execution took the run over: it answers, not us.
            logger.warning("run taken over before it finished", extra={"run_id": run.pk})
            return AgentRun.objects.get(pk=run.pk)
        reply = conversation_services.message_create(
            conversation=run.conversation,
            role=Message.Role.ASSISTANT,
            content=result.content,
            tool_calls=result.tool_calls,
            event="message.completed",
            publisher=publisher,
        )
        run.status = AgentRun.Status.COMPLETED
        run.reply_message = reply
        run.tool_calls = result.tool_calls
        run.usage = result.usage.as_dict()
        run.latency_ms = int(elapsed * 1000)
        run.finished_at = timezone.now()
        run.error = ""
        run.save(update_fields=["status", "reply_message", "tool_calls", "usage", "latency_ms", "finished_at", "error"])
        audit_record(
            tenant=run.user.tenant if run.user else run.conversation.tenant,
            actor=run.user,
            action="run.completed",
            resource_type="agent_run",
            resource_id=run.pk,
            details={"provider": run.provider, "tools": [c["name"] for c in result.tool_calls]},
        )
        transaction.on_commit(lambda: publisher.emit("run.completed", {**handle, **run_event_data(run)}))
    metrics.observe_agent_run(run.provider, "completed", elapsed)
    return run


def run_fail(*, run: AgentRun, error: str, latency_ms: int | None = None, publisher: Publisher | None = None) -> bool:
    """Marks a run failed (the user's message stays) and says so to the conversation.

    Only a run still queued, or running under the same claim as ``run`` carries, is
    failed: a run another execution finished or took over is left alone. Returns whether
    it failed the run.
    """
    publisher = publisher or Publisher(run.conversation_id)
    with transaction.atomic():
        current = AgentRun.objects.select_for_update(of=("self",)).only("status", "claimed_by").get(pk=run.pk)
        settled = current.status in (AgentRun.Status.COMPLETED, AgentRun.Status.FAILED)
        taken_over = current.status == AgentRun.Status.RUNNING and current.claimed_by != run.claimed_by
        if settled or taken_over:
            return False
        run.status = AgentRun.Status.FAILED
        run.error = error[:2000]
        run.latency_ms = latency_ms
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "latency_ms", "finished_at"])
        audit_record(
            tenant=run.conversation.tenant,
            actor=run.user,
            action="run.failed",
            resource_type="agent_run",
            resource_id=run.pk,
            details={"provider": run.provider, "error": run.error[:200]},
        )
        data = {"run_id": run.pk, "in_reply_to": run.trigger_message_id, "error": "agent_unavailable"}
        transaction.on_commit(lambda: publisher.emit("run.failed", data))
    logger.warning("agent run failed", extra={"run_id": run.pk, "error": run.error[:200]})
    metrics.observe_agent_run(run.provider, "failed", (latency_ms or 0) / 1000)
    return True


def run_event_data(run: AgentRun) -> dict:
    return {
        "run_id": run.pk,
        "status": run.status,
        "reply_id": run.reply_message_id,
        "tool_calls": run.tool_calls,
        "usage": run.usage,
        "latency_ms": run.latency_ms,
    }


def chat_turn(*, user, content: str, conversation_id=None, sink=None) -> Turn:
    """A whole turn in the caller's request: store the message, run the agent, store the
    reply. Raises ``AgentUnavailable`` (503) when the model fails; the message stays."""
    turn = turn_begin(user=user, content=content, conversation_id=conversation_id)
    turn.run = run_execute(run_id=turn.run.pk, sink=sink)
    if turn.run.status == AgentRun.Status.FAILED:  # a resent message whose turn had failed
        raise AgentUnavailable("The assistant could not answer this message.", details={"run_id": turn.run.pk})
    return turn


def message_post(
    *, user, conversation_id, content: str, attachments: list | None = None, client_message_id: str | None = None
) -> Turn:
    """Stores the user's message and a queued run, and hands the run to a Celery worker
    once the transaction has committed. The caller answers at once (202), also when the
    broker is down: the stored run is the outbox (see ``run_enqueue``)."""
    with transaction.atomic():
        turn = turn_begin(
            user=user,
            content=content,
            conversation_id=conversation_id,
            attachments=attachments,
            client_message_id=client_message_id,
        )
        if turn.created:
            run_id = turn.run.pk
            transaction.on_commit(lambda: run_enqueue(run_id=run_id))
    return turn


def run_enqueue(*, run_id: int) -> bool:
    """Hands a queued run to the broker; call after the run's transaction committed.

    Never raises: when the broker refuses the task (Redis down), the run is marked
    ``enqueue_failed_at`` and ``runs_relay`` (a beat task every few seconds) hands it over
    once the broker is back. Should even that mark fail (the database went too), the stale
    sweep re-queues the run after ``AGENT_STALE_QUEUED_SECONDS``. True when enqueued."""
    from .tasks import run_agent_task

    try:
        run_agent_task.delay(run_id)
    except Exception:  # noqa: BLE001 - the message and its run are stored: nothing to fail
        logger.warning("could not enqueue run; the relay will", exc_info=True, extra={"run_id": run_id})
        try:
            AgentRun.objects.filter(pk=run_id, status=AgentRun.Status.QUEUED).update(enqueue_failed_at=timezone.now())
        except Exception:  # noqa: BLE001
            logger.warning("could not mark run unsent; the stale sweep will requeue it", extra={"run_id": run_id})
        return False
    return True


def runs_relay(*, limit: int = 500) -> dict:
    """Hands the runs whose enqueue failed to the broker (oldest first, at most ``limit``)
    and clears their mark; a run that fails again keeps it for the next relay. A run that
    was handed over twice is harmless: ``run_execute`` runs a run once. Returns what it did."""
    from .tasks import run_agent_task

    unsent = AgentRun.objects.filter(status=AgentRun.Status.QUEUED, enqueue_failed_at__isnull=False)
    relayed, failed = [], []
    for run_id, failed_at in unsent.order_by("enqueue_failed_at").values_list("pk", "enqueue_failed_at")[:limit]:
        try:
            run_agent_task.delay(run_id)
        except Exception:  # noqa: BLE001 - the broker is still down: next time
            logger.warning("relay could not enqueue run", exc_info=True, extra={"run_id": run_id})
            failed.append(run_id)
            break
        AgentRun.objects.filter(pk=run_id, enqueue_failed_at=failed_at).update(enqueue_failed_at=None)
        relayed.append(run_id)
    if relayed:
        logger.info("relayed unsent runs", extra={"runs": relayed})
    return {"relayed": relayed, "failed": failed}


def runs_sweep(*, now=None) -> dict:
    """Finds runs no worker will finish and settles them: a run ``running`` past its lease
    (its worker died) is queued again while it has attempts left, else failed; a run
    ``queued`` for longer than ``AGENT_STALE_QUEUED_SECONDS`` (its task was lost) is
    queued again, once per such period. Returns what it did."""
    from .tasks import run_agent_task

    now = now or timezone.now()
    requeued, failed = [], []
    stuck = AgentRun.objects.filter(
        status=AgentRun.Status.RUNNING, started_at__lt=now - timedelta(seconds=_lease_seconds())
    )
    for run in stuck.select_related("conversation", "user"):
        if run.attempts >= settings.AGENT_MAX_ATTEMPTS:
            if run_fail(run=run, error="the worker running this turn was lost"):
                failed.append(run.pk)
        elif AgentRun.objects.filter(pk=run.pk, status=AgentRun.Status.RUNNING, claimed_by=run.claimed_by).update(
            status=AgentRun.Status.QUEUED, claimed_by="", queued_at=now
        ):
            requeued.append(run.pk)
    stale = AgentRun.objects.filter(
        status=AgentRun.Status.QUEUED, queued_at__lt=now - timedelta(seconds=settings.AGENT_STALE_QUEUED_SECONDS)
    )
    stale_ids = list(stale.values_list("pk", flat=True))
    AgentRun.objects.filter(pk__in=stale_ids, status=AgentRun.Status.QUEUED).update(queued_at=now)
    requeued += [pk for pk in stale_ids if pk not in requeued]
    for run_id in requeued:
        transaction.on_commit(lambda run_id=run_id: run_agent_task.delay(run_id))
    return {"requeued": requeued, "failed": failed}
