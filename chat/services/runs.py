"""One agent execution (a run): its state moves, its claim and lease, executing it, and
the sweep and outbox relay that keep queued runs moving.

A run's ``status`` changes only through ``run_transition``, which knows the legal moves.
``run_execute`` has one contract for every entry point: it takes a ``Delivery`` (where the
events go, whether the listener is gone, who claims the run) and returns an ``Outcome``;
the retry and attempt policy lives here, so the Celery task, the sync views and the SSE
view only map the outcome to their transport."""

import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from audits.services import audit_record
from config import statements
from config.core import background, metrics
from config.core.context import current_request_id
from config.db import release_connection, releasing_connection
from conversations import services as conversation_services
from conversations.events import BatchingPublisher, Publisher
from conversations.models import Message

from .. import queue, selectors
from ..agent.providers import get_provider
from ..agent.runner import run_agent
from ..agent.types import ProviderError
from ..models import AgentRun

logger = logging.getLogger(__name__)

Status = AgentRun.Status

# Which moves a run may make: from -> the states it may go to.
LEGAL_MOVES: dict[str, frozenset[str]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED}),
    # running -> running: a redelivery of the same task, or anyone once the lease lapsed,
    # takes the run over; running -> queued: a retry later, or the sweep after a lost worker.
    Status.RUNNING: frozenset({Status.RUNNING, Status.COMPLETED, Status.FAILED, Status.QUEUED}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
}


class IllegalRunTransition(ValueError):
    """A move ``LEGAL_MOVES`` does not allow: a bug in the caller, never a race."""


class TurnCancelled(Exception):
    """The listener that ran the turn went away (an SSE client disconnected)."""


def run_transition(
    run: AgentRun, *, to: str, expect: str | tuple[str, ...], claim: str | None = None, **fields
) -> bool:
    """Moves ``run`` to ``to`` if it is still in (one of) ``expect`` and, when it is running,
    still held by ``claim`` (given ``claim``); sets ``fields`` with it, in one conditional
    UPDATE. Returns whether the run moved (False: another execution moved it first); the
    instance is updated only then. Raises ``IllegalRunTransition`` for a move that is
    never allowed, whatever the row holds."""
    expected = (expect,) if isinstance(expect, str) else tuple(expect)
    for source in expected:
        if to not in LEGAL_MOVES[source]:
            raise IllegalRunTransition(f"a run may not move from {source} to {to}")
    match = Q(status__in=[s for s in expected if s != Status.RUNNING])
    if Status.RUNNING in expected:
        match |= Q(status=Status.RUNNING, **({"claimed_by": claim} if claim is not None else {}))
    moved = AgentRun.objects.filter(match, pk=run.pk).update(status=to, **fields)
    if moved:
        run.status = to
        for name, value in fields.items():
            setattr(run, name, value)
    return bool(moved)


def run_transition_with(run: AgentRun, *, writes: statements.Writes, to: str, claim: str, **fields) -> statements.Step:
    """``run_transition`` from running under ``claim`` as a step of ``writes`` (the reply,
    its run's settling and its audit record in one statement): the step's ``row`` is None
    after ``writes.execute()`` when the run did not move (another execution moved it
    first), and the instance is updated only when it did. ``fields`` may hold ``Ref``s to
    earlier steps (the reply's id)."""
    if to not in LEGAL_MOVES[Status.RUNNING]:
        raise IllegalRunTransition(f"a run may not move from {Status.RUNNING} to {to}")
    step = writes.update(
        AgentRun, pk=run.pk, values={"status": to, **fields}, match={"status": Status.RUNNING, "claimed_by": claim}
    )

    def moved() -> None:
        if step.row is not None:
            run.status = to
            for name, value in fields.items():
                if isinstance(value, statements.Ref):  # a related row's id
                    setattr(run, AgentRun._meta.get_field(name).attname, value.value)
                else:
                    setattr(run, name, value)

    writes.on_done(moved)
    return step


@dataclass(frozen=True)
class Delivery:
    """Who executes a run and where its events go.

    ``sink`` receives every event frame besides the conversation's group (the SSE stream);
    ``listener_gone`` is set when the one listener left (the turn stops at its next
    event); ``claim`` is the Celery task id (a redelivery of the same task may take the run
    over), None for a request; ``retriable``: the transport can run it again later."""

    sink: Callable[[dict], None] | None = None
    listener_gone: threading.Event | None = None
    claim: str | None = None
    retriable: bool = False

    @classmethod
    def in_request(cls, *, sink=None, listener_gone: threading.Event | None = None) -> "Delivery":
        return cls(sink=sink, listener_gone=listener_gone)

    @classmethod
    def on_worker(cls, *, task_id: str) -> "Delivery":
        return cls(claim=task_id, retriable=True)


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRY_LATER = "retry_later"  # back in the queue: run it again after ``countdown``
    NOT_OURS = "not_ours"  # settled already, or held by another live execution


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    run: AgentRun
    countdown: int | None = None
    error: Exception | None = None


def _lease_seconds() -> int:
    """How long a claim on a running run holds: past the task time limit its holder is dead."""
    return settings.CELERY_TASK_TIME_LIMIT + 60


def _retry_countdown(attempts: int) -> int:
    """Exponential backoff: the first retry waits AGENT_RETRY_BACKOFF_SECONDS, then doubles."""
    return settings.AGENT_RETRY_BACKOFF_SECONDS * (2 ** max(attempts - 1, 0))


class _TakenOver(Exception):
    """Another execution settled the run while ours was finishing: roll ours back."""


def run_claim(*, run_id: int, claim: str | None) -> tuple[AgentRun, bool]:
    """Takes the run for this execution: (run, True) when it is ours to run, (run, False)
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
        if run.status in (Status.COMPLETED, Status.FAILED):
            return run, False
        if run.status == Status.RUNNING:
            redelivered = claim is not None and run.claimed_by == claim
            lapsed = run.started_at is None or run.started_at < timezone.now() - timedelta(seconds=_lease_seconds())
            if not (redelivered or lapsed):
                return run, False  # another execution is running it right now
            if run.attempts >= settings.AGENT_MAX_ATTEMPTS:
                # A turn that kills its worker must not be redelivered forever.
                run_fail(run=run, error="the worker running this turn was lost")
                return run, False
        moved = run_transition(
            run,
            to=Status.RUNNING,
            expect=run.status,
            claim=run.claimed_by,
            claimed_by=claim or request_claim(),
            started_at=timezone.now(),
            attempts=run.attempts + 1,
        )
    return run, moved


def run_execute(*, run_id: int, delivery: Delivery) -> RunResult:
    """Runs the agent for a queued run and stores its reply; returns how it ended.

    Events go to the conversation's group (and to ``delivery.sink``). A run settled, or
    held by another live execution, is ``NOT_OURS`` and left as it is, so duplicate or
    redelivered tasks never answer twice. A provider failure is ``RETRY_LATER`` (the run
    is queued again) when it is transient, the delivery can retry and attempts are left
    (``AGENT_MAX_ATTEMPTS``, lost workers count); otherwise the run is failed (``FAILED``;
    the user's message stays). A set ``listener_gone`` stops the turn at its next event
    (``CANCELLED``, the run failed as cancelled). Any other error is a bug: it fails the
    run and propagates.
    """
    run, ours = run_claim(run_id=run_id, claim=delivery.claim)
    if not ours:
        return RunResult(Outcome.NOT_OURS, run)
    return run_execute_claimed(run=run, delivery=delivery)


def request_claim() -> str:
    """The claim of an execution in a request (sync chat, SSE): unique, never a task id."""
    return f"request:{uuid.uuid4().hex}"


def run_execute_claimed(*, run: AgentRun, delivery: Delivery, history: list[dict] | None = None) -> RunResult:
    """``run_execute`` for a run this execution holds already: claimed by ``run_claim``, or
    stored running and claimed in the transaction of its user's message (``turn_begin``
    with ``claim``, a turn answered in the request: one transaction fewer). ``run`` carries
    its conversation, trigger message and user. ``history`` is what the model is given
    when the caller knows it (a conversation that began with this message), else it is
    read from the database."""
    provider = get_provider()
    if getattr(provider, "in_process", False):
        # The whole turn takes a few milliseconds: its events reach the conversation's
        # group together when it ends (one hand-over, one lookup of an empty group),
        # the sink (the SSE caller) still gets each one at once.
        publisher = BatchingPublisher(run.conversation_id, sink=delivery.sink)
        try:
            return _execute(run=run, delivery=delivery, history=history, provider=provider, publisher=publisher)
        finally:
            # The turn's writes are done: its connection goes back to the pool before the
            # wait for the publisher loop, not after it (it held other turns' queries).
            release_connection()
            publisher.flush()
    publisher = Publisher(run.conversation_id, sink=delivery.sink)
    return _execute(run=run, delivery=delivery, history=history, provider=provider, publisher=publisher)


def _execute(*, run: AgentRun, delivery: Delivery, history, provider, publisher: Publisher) -> RunResult:
    may_retry = delivery.retriable and run.attempts < settings.AGENT_MAX_ATTEMPTS
    handle = {"run_id": run.pk, "in_reply_to": run.trigger_message_id}
    publisher.emit("run.started", {**handle, "provider": run.provider, "model": run.model, "attempt": run.attempts})
    started = time.perf_counter()
    gone = delivery.listener_gone

    def emit(kind: str, data: dict) -> None:
        if gone is not None and gone.is_set():
            raise TurnCancelled()
        publisher.emit(kind, {**handle, **data})

    answered = False
    try:
        # A provider that answers in this process (the local one) runs its tool calls and
        # the reply in one transaction: one commit (and one audit seal) per turn instead of
        # one per tool call plus the reply's. A remote model keeps a transaction per tool
        # call: no transaction stays open while it thinks over the network.
        with transaction.atomic() if getattr(provider, "in_process", False) else nullcontext():
            if history is None:
                history = selectors.conversation_history(
                    conversation=run.conversation,
                    upto_seq=run.trigger_message.seq,
                    budget_chars=settings.AGENT_HISTORY_CHARS,
                )
            result = run_agent(
                provider=provider,
                user=run.user,
                history=history,
                emit=emit,
                max_rounds=settings.AGENT_MAX_TOOL_ROUNDS,
            )
            answered = True
            elapsed = time.perf_counter() - started
            _store_reply(run=run, result=result, elapsed=elapsed, publisher=publisher, handle=handle)
    except TurnCancelled:
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        run_fail(run=run, error="cancelled: the client went away", latency_ms=elapsed_ms, publisher=publisher)
        return RunResult(Outcome.CANCELLED, run)
    except ProviderError as exc:
        elapsed = time.perf_counter() - started
        if may_retry and exc.transient:
            requeued = run_transition(
                run,
                to=Status.QUEUED,
                expect=Status.RUNNING,
                claim=run.claimed_by,
                claimed_by="",
                queued_at=timezone.now(),
                error=str(exc)[:2000],
            )
            if not requeued:
                return RunResult(Outcome.NOT_OURS, AgentRun.objects.get(pk=run.pk))
            metrics.observe_agent_run(run.provider, "retried", elapsed)
            return RunResult(Outcome.RETRY_LATER, run, countdown=_retry_countdown(run.attempts), error=exc)
        run_fail(run=run, error=str(exc), latency_ms=int(elapsed * 1000), publisher=publisher)
        return RunResult(Outcome.FAILED, run, error=exc)
    except _TakenOver:
        # Our lease lapsed and another execution took the run over: it answers, not us.
        logger.warning("run taken over before it finished", extra={"run_id": run.pk})
        return RunResult(Outcome.NOT_OURS, AgentRun.objects.get(pk=run.pk))
    except Exception as exc:
        if answered:
            raise  # storing the reply failed: the run stays running, its lease decides
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        run_fail(run=run, error=f"internal error: {type(exc).__name__}", latency_ms=elapsed_ms, publisher=publisher)
        raise
    metrics.observe_agent_run(run.provider, "completed", elapsed)
    return RunResult(Outcome.COMPLETED, run)


def _store_reply(*, run: AgentRun, result, elapsed: float, publisher: Publisher, handle: dict) -> None:
    """Stores the reply and settles the run with it, in one transaction (the caller's when
    there is one). Raises ``_TakenOver`` (rolling it back) when the run is no longer ours."""
    settled: list[statements.Step | bool] = []

    def settle(reply: Message, writes: statements.Writes | None) -> None:
        # One conditional UPDATE settles the run with its reply; it also locks the row:
        # nobody else settles it before we commit. On PostgreSQL one statement with the
        # seq bump, the reply and the run's audit record.
        fields = {
            "reply_message": reply if writes is None else reply.pk,
            "tool_calls": result.tool_calls,
            "usage": result.usage.as_dict(),
            "latency_ms": int(elapsed * 1000),
            "finished_at": timezone.now(),
            "error": "",
        }
        if writes is None:
            settled.append(
                run_transition(run, to=Status.COMPLETED, expect=Status.RUNNING, claim=run.claimed_by, **fields)
            )
            if not settled[0]:
                raise _TakenOver()  # rolls the reply (and its seq) back
        else:
            settled.append(run_transition_with(run, writes=writes, to=Status.COMPLETED, claim=run.claimed_by, **fields))
        audit_record(
            tenant=run.user.tenant_id if run.user else run.conversation.tenant_id,
            actor=run.user,
            action="run.completed",
            resource_type="agent_run",
            resource_id=run.pk,
            details={"provider": run.provider, "tools": [c["name"] for c in result.tool_calls]},
            writes=writes,
        )

    with transaction.atomic(savepoint=False):
        reply = conversation_services.message_create(
            conversation=run.conversation,
            role=Message.Role.ASSISTANT,
            content=result.content,
            tool_calls=result.tool_calls,
            event="message.completed",  # published on commit only
            publisher=publisher,
            also=settle,
        )
        if isinstance(settled[0], statements.Step) and settled[0].row is None:
            raise _TakenOver()  # rolls the reply (and its seq, and the record) back
        if isinstance(settled[0], statements.Step):
            run.reply_message = reply  # the id, and the cached row
        transaction.on_commit(lambda: publisher.emit("run.completed", {**handle, **run_event_data(run)}))


def run_fail(*, run: AgentRun, error: str, latency_ms: int | None = None, publisher: Publisher | None = None) -> bool:
    """Marks a run failed (the user's message stays) and says so to the conversation.

    Only a run still queued, or running under the same claim as ``run`` carries, is
    failed: a run another execution finished or took over is left alone. Returns whether
    it failed the run.
    """
    publisher = publisher or Publisher(run.conversation_id)
    with transaction.atomic():
        failed = run_transition(
            run,
            to=Status.FAILED,
            expect=(Status.QUEUED, Status.RUNNING),
            claim=run.claimed_by,
            error=error[:2000],
            latency_ms=latency_ms,
            finished_at=timezone.now(),
        )
        if not failed:
            return False
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


def run_enqueue(*, run_id: int) -> bool:
    """Hands a queued run to the broker; call after the run's transaction committed.

    On the real stack the run goes to this process's background batcher
    (``config.core.background``) and this returns at once (True: handed to the batcher):
    the request that stored the run does not wait for the publish, and under load one
    Redis pipeline carries the runs of many requests (``_runs_hand_over``). When Celery
    runs tasks eagerly (tests, embedded mode) the run is sent here, in the caller's thread.

    Never raises: when the broker refuses the task (Redis down), the run is marked
    ``enqueue_failed_at`` and ``runs_relay`` (a beat task every few seconds) hands it over
    once the broker is back. Should even that mark fail (the database went too), or the
    process die between the commit and the publish, the stale sweep re-queues the run
    after ``AGENT_STALE_QUEUED_SECONDS``. False when the broker refused it here."""
    request_id = current_request_id()
    if queue.in_background():
        _run_batcher.submit((run_id, request_id))
        return True
    return _runs_hand_over([(run_id, request_id)])


def _runs_hand_over(runs: list[tuple[int, str | None]]) -> bool:
    """Sends ``runs`` (run id, request id) in one publish; on a refusal marks every one of
    them unsent for the relay. True when sent."""
    try:
        queue.run_send_many(runs)
    except Exception:  # noqa: BLE001 - the messages and their runs are stored: nothing to fail
        run_ids = [run_id for run_id, _ in runs]
        logger.warning("could not enqueue runs; the relay will", exc_info=True, extra={"runs": run_ids})
        try:
            AgentRun.objects.filter(pk__in=run_ids, status=Status.QUEUED).update(enqueue_failed_at=timezone.now())
        except Exception:  # noqa: BLE001
            logger.warning("could not mark runs unsent; the stale sweep will requeue them", extra={"runs": run_ids})
        return False
    return True


_run_batcher = background.Batcher(releasing_connection(_runs_hand_over), name="run-hand-over")


def runs_relay(*, limit: int = 500) -> dict:
    """Hands the runs whose enqueue failed to the broker (oldest first, at most ``limit``)
    and clears their mark; a run that fails again keeps it for the next relay. A run that
    was handed over twice is harmless: ``run_execute`` runs a run once. Returns what it did."""
    unsent = AgentRun.objects.filter(status=Status.QUEUED, enqueue_failed_at__isnull=False)
    relayed, failed = [], []
    for run_id, failed_at in unsent.order_by("enqueue_failed_at").values_list("pk", "enqueue_failed_at")[:limit]:
        try:
            queue.run_send(run_id)
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
    now = now or timezone.now()
    requeued, failed = [], []
    stuck = AgentRun.objects.filter(status=Status.RUNNING, started_at__lt=now - timedelta(seconds=_lease_seconds()))
    for run in stuck.select_related("conversation", "user"):
        if run.attempts >= settings.AGENT_MAX_ATTEMPTS:
            if run_fail(run=run, error="the worker running this turn was lost"):
                failed.append(run.pk)
        elif run_transition(
            run, to=Status.QUEUED, expect=Status.RUNNING, claim=run.claimed_by, claimed_by="", queued_at=now
        ):
            requeued.append(run.pk)
    # Still queued, only its clock moves: this is not a state change.
    stale = AgentRun.objects.filter(
        status=Status.QUEUED, queued_at__lt=now - timedelta(seconds=settings.AGENT_STALE_QUEUED_SECONDS)
    )
    stale_ids = list(stale.values_list("pk", flat=True))
    AgentRun.objects.filter(pk__in=stale_ids, status=Status.QUEUED).update(queued_at=now)
    requeued += [pk for pk in stale_ids if pk not in requeued]
    for run_id in requeued:
        transaction.on_commit(lambda run_id=run_id: queue.run_send(run_id))
    return {"requeued": requeued, "failed": failed}


def _latest_failed_runs():
    """Failed runs that are the newest run of their trigger message: the turns still
    without an answer. A run already retried has a newer run and is left out."""
    newer = AgentRun.objects.filter(trigger_message_id=OuterRef("trigger_message_id"), pk__gt=OuterRef("pk"))
    return AgentRun.objects.filter(status=Status.FAILED).filter(~Exists(newer))


def run_retry(*, run: AgentRun, actor=None, via: str = "admin") -> AgentRun | None:
    """Answers a failed turn again: a new queued run for the same trigger message (the
    failed run stays as it was, its history intact, since ``failed`` is final), handed to
    a worker after commit. Only the newest run of a message is retried, once: a run that
    is not failed, or that was retried already, gives None and changes nothing. Recorded
    as ``run.retried`` on the conversation's trail (``actor`` None: the system)."""
    with transaction.atomic():
        # The trigger message's row serialises concurrent retries of the same turn.
        Message.objects.select_for_update().filter(pk=run.trigger_message_id).first()
        if not _latest_failed_runs().filter(pk=run.pk).exists():
            return None
        provider = get_provider()
        retry = AgentRun.objects.create(
            tenant_id=run.tenant_id,
            conversation_id=run.conversation_id,
            user_id=run.user_id,
            trigger_message_id=run.trigger_message_id,
            provider=provider.name,
            model=provider.model,
        )
        audit_record(
            tenant=run.tenant_id,
            actor=actor,
            action="run.retried",
            resource_type="agent_run",
            resource_id=retry.pk,
            details={"failed_run_id": run.pk, "conversation_id": run.conversation_id, "via": via},
        )
        transaction.on_commit(lambda: run_enqueue(run_id=retry.pk))
    return retry


def runs_retry_failed(
    *,
    actor=None,
    tenant_id: int | None = None,
    since=None,
    limit: int | None = None,
    dry_run: bool = False,
    via: str = "command",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Retries every failed turn still without an answer (``run_retry``), oldest first,
    optionally of one tenant, failed since ``since``, at most ``limit``. ``dry_run``: only
    counts them. Returns ``{"found", "retried": [new run ids], "skipped"}``; ``progress``
    is called with (done, total) after each run."""
    failed = _latest_failed_runs().order_by("created_at", "pk")
    if tenant_id is not None:
        failed = failed.filter(tenant_id=tenant_id)
    if since is not None:
        failed = failed.filter(finished_at__gte=since)
    runs = list(failed[:limit] if limit else failed)
    result = {"found": len(runs), "retried": [], "skipped": 0}
    if dry_run:
        return result
    for done, run in enumerate(runs, start=1):
        retry = run_retry(run=run, actor=actor, via=via)
        if retry is None:
            result["skipped"] += 1
        else:
            result["retried"].append(retry.pk)
        if progress:
            progress(done, len(runs))
    return result
