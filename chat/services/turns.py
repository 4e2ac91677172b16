"""Turns: a turn is the user's message and the agent run answering it.

``turn_begin`` stores both (the run queued) and commits before any agent work;
``turn_answer`` then runs the agent in the caller's request; ``turn_enqueue`` hands the run
to a worker instead. Executing a run is ``runs.run_execute``'s job, whoever calls it."""

import functools
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config import statements
from config.core.errors import Conflict
from conversations import selectors as conversation_selectors
from conversations import services as conversation_services
from conversations.models import Conversation, Message

from .. import selectors
from ..agent.providers import get_provider
from ..models import AgentRun
from . import runs


@dataclass
class Turn:
    conversation: Conversation
    message: Message
    run: AgentRun
    # False when a resent client_message_id returned a turn stored earlier.
    created: bool = True
    # How the run ended, when this call executed it (turn_answer); None otherwise.
    outcome: runs.Outcome | None = None
    # The conversation began with this message (it was created by this turn).
    new_conversation: bool = False
    # The run was stored running, claimed for this request (turn_begin with ``claim``).
    claimed: bool = False

    def history(self) -> list[dict] | None:
        """What the model is given, when known without a query: the one message of a
        conversation this turn began; else None (read from the database)."""
        if not self.new_conversation:
            return None
        return selectors.history_of_first_message(self.message, budget_chars=settings.AGENT_HISTORY_CHARS)

    def execute(self, delivery: runs.Delivery) -> runs.RunResult:
        """Runs the turn's agent run in the caller's request: at once when ``turn_begin``
        stored it claimed for this request, else through ``run_execute``'s claim."""
        if self.claimed:
            return runs.run_execute_claimed(run=self.run, delivery=delivery, history=self.history())
        return runs.run_execute(run_id=self.run.pk, delivery=delivery)


def turn_begin(
    *,
    user,
    content: str,
    conversation_id=None,
    attachments: list | None = None,
    client_message_id: str | None = None,
    unanswered_ok: bool = False,
    claim: bool = False,
    on_committed: Callable[[Turn], None] | None = None,
    after_commit: Callable[[Turn], None] | None = None,
    own_transaction: bool | None = None,
) -> Turn:
    """Stores the user's message and a queued run for it, and commits, before any agent
    work: whatever happens to the agent, the message is kept. No ``conversation_id``
    starts a new conversation; an unknown or foreign one is 404. Resending a
    ``client_message_id`` returns the stored turn instead of a second one.

    In a conversation bound to an external channel the agent answers the contact, not the
    tenant's own people: their message goes to the contact (routed by the hub) and gets no
    run (``Turn.run`` None). Only ``turn_enqueue`` accepts that (``unanswered_ok``); the
    answering paths refuse such a conversation with 409 before storing anything.

    ``claim``: the caller answers the turn in its request at once (``turn_answer``, the SSE
    stream): the run is stored ``running``, claimed for this request (attempt 1), in the
    same transaction as the message, and ``Turn.execute`` runs it without a claim
    transaction of its own. A crash before the answer leaves a running run whose lease
    lapses; ``runs_sweep`` queues it again then, as for a lost worker.

    ``on_committed(turn)`` is called right after the commit, before any other after-commit
    work (the audit seal request, the ``message.created`` publish): the SSE stream sends its
    first event then, while those finish in this thread. It must not raise.
    ``after_commit(turn)`` is called after every other after-commit work of the turn
    (``turn_enqueue`` hands the run to a worker then).

    ``own_transaction``: this call's transaction is the caller's whole transaction (None:
    when no transaction is open yet). The conversation (when new), the message, their
    audit records and the run are then one statement committing on its own, with no
    ``BEGIN``/``COMMIT`` round trips (``config.statements``; on PostgreSQL, without a
    ``client_message_id`` and outside a bound conversation)."""
    conversation_services.check_content(content)
    provider = get_provider()
    conversation = None
    if conversation_id is not None:  # 404 before any write
        conversation = conversation_selectors.conversation_get(
            tenant=user.tenant_id, user=user, conversation_id=conversation_id
        )
    # A new conversation is always on the api channel; a bound one is refused (409) before
    # any write: the block below takes no savepoint, so nothing expected may fail in it.
    bound = conversation is not None and conversation.channel != Conversation.Channel.API
    if bound and not unanswered_ok:
        raise Conflict(
            "This conversation is bound to an external channel: post to its messages instead.",
            code="conversation_bound",
        )
    # No savepoint when nested (turn_enqueue): nothing expected fails inside.
    new_conversation = conversation is None
    if own_transaction is None:
        own_transaction = not transaction.get_connection().in_atomic_block
    stored: list[Turn] = []
    with transaction.atomic(savepoint=False):
        if on_committed is not None:
            # Registered first, so it runs first on commit (hooks run in order).
            transaction.on_commit(lambda: stored and on_committed(stored[0]), robust=True)
        runs_stored: list[AgentRun] = []
        held = {}
        if claim:
            held = {
                "status": AgentRun.Status.RUNNING,
                "claimed_by": runs.request_claim(),
                "started_at": timezone.now(),
                "attempts": 1,
            }

        def run_for(message: Message, writes: statements.Writes | None) -> None:
            # The queued (or claimed) run answering the new message: on PostgreSQL one
            # statement with the seq bump, the message and its audit record.
            run = AgentRun(
                tenant_id=user.tenant_id,
                conversation=message.conversation,
                user=user,
                trigger_message=message,
                provider=provider.name,
                model=provider.model,
                **held,
            )
            runs_stored.append(run)
            if writes is None:
                run.save(force_insert=True)
                return
            step = writes.insert(run)

            def inserted() -> None:
                run.pk = step.row[0]
                run._state.adding, run._state.db = False, message._state.db
                # The ids (filled in by now), and the cached rows (no query later).
                run.conversation, run.trigger_message = message.conversation, message

            writes.on_done(inserted)

        send = functools.partial(
            conversation_services.message_send,
            user=user,
            content=content,
            attachments=attachments,
            client_message_id=client_message_id,
            also=None if bound else run_for,
        )
        if conversation is None:
            # On PostgreSQL the conversation, its first message and everything with them
            # are one statement.
            sent = []
            conversation = conversation_services.conversation_create(
                user=user,
                title=_title_from(content),
                first=lambda created, writes: sent.append(send(conversation=created, writes=writes)),
                own_transaction=own_transaction,
            )
            message, created = sent[0]
        else:
            message, created = send(conversation=conversation, own_transaction=own_transaction)
        run = None
        claimed = False
        if not created:
            run = message.triggered_runs.order_by("-id").first()
        elif runs_stored:
            run, claimed = runs_stored[0], claim
        stored.append(
            Turn(
                conversation=conversation,
                message=message,
                run=run,
                created=created,
                new_conversation=new_conversation and created,
                claimed=claimed,
            )
        )
        if after_commit is not None:
            transaction.on_commit(lambda: after_commit(stored[0]))
    return stored[0]


def _title_from(content: str) -> str:
    first_line = " ".join(content.split())
    return first_line if len(first_line) <= 60 else first_line[:59] + "…"


def turn_answer(*, user, content: str, conversation_id=None, delivery: runs.Delivery | None = None) -> Turn:
    """A whole turn in the caller's request: store the message, run the agent, store the
    reply. The turn's ``outcome`` says how the run ended; the message stays whatever it is."""
    turn = turn_begin(user=user, content=content, conversation_id=conversation_id, claim=True)
    result = turn.execute(delivery or runs.Delivery.in_request())
    turn.run, turn.outcome = result.run, result.outcome
    return turn


def turn_enqueue(
    *, user, conversation_id, content: str, attachments: list | None = None, client_message_id: str | None = None
) -> Turn:
    """Stores the user's message and a queued run, and hands the run to a worker once the
    transaction has committed. The caller answers at once (202), also when the broker is
    down: the stored run is the outbox (see ``runs.run_enqueue``)."""

    def enqueue(turn: Turn) -> None:
        if turn.created and turn.run is not None:
            runs.run_enqueue(run_id=turn.run.pk)

    begin = functools.partial(
        turn_begin,
        user=user,
        content=content,
        conversation_id=conversation_id,
        attachments=attachments,
        client_message_id=client_message_id,
        unanswered_ok=True,
        after_commit=enqueue,
    )
    if transaction.get_connection().in_atomic_block:
        # Inside the caller's transaction: a savepoint, so a refused turn (a bad
        # attachment...) leaves the caller's transaction usable.
        with transaction.atomic():
            return begin(own_transaction=False)
    # turn_begin's transaction is the whole of it (nothing is written here but its).
    return begin()


def turn_reply_to(*, message: Message, user) -> AgentRun:
    """A queued run answering ``message`` (stored by someone else: an inbound channel
    message), handed to a worker after commit; the agent acts as ``user``."""
    provider = get_provider()
    run = AgentRun.objects.create(
        tenant_id=message.tenant_id,
        conversation_id=message.conversation_id,
        user=user,
        trigger_message=message,
        provider=provider.name,
        model=provider.model,
    )
    run_id = run.pk
    transaction.on_commit(lambda: runs.run_enqueue(run_id=run_id))
    return run
