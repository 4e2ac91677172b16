"""The live HTTP interfaces (server-sent events), beside the WebSocket consumer:

- ``POST /api/v1/chat/stream``: one chat turn answered as server-sent events;
- ``GET /api/v1/conversations/{id}/events``: a conversation's live events, resumable.

Both take their caller through ``sse.authenticated`` (bearer token, then the tenant's rate
limit). The events stream resumes through ``conversations.subscriptions``, the one resume
implementation the WebSocket consumer uses too.
"""

import asyncio
import logging
import threading
import time

from channels.db import database_sync_to_async
from django.conf import settings
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from config.api import parsers, sse
from config.api.auth import Access, user_still_active
from config.api.errors import (
    dependency_failure,
    dependency_unavailable_response,
    error_response,
    validation_error_response,
)
from config.core.errors import ApplicationError
from conversations import selectors as conversation_selectors
from conversations.events import event_frame
from conversations.serializers import message_data
from conversations.subscriptions import ConversationSubscription, parse_resume_point

from .serializers import ChatRequestSerializer
from .services import runs, turns

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
@sse.authenticated
async def chat_stream(request, access: Access):
    """Streams ``message.created`` (the user's message), ``run.started``, ``message.delta``,
    ``tool.call``, ``tool.result``, ``message.completed`` (the stored reply) and
    ``run.completed`` — or ``run.failed``. A client that disconnects stops the turn."""
    user = access.user
    try:
        body = parsers.loads(request.body or b"{}")
    except parsers.InvalidJSON as exc:
        return error_response(400, "parse_error", str(exc.detail))
    data = ChatRequestSerializer(data=body)
    if not data.is_valid():
        return validation_error_response(data.errors)
    loop = asyncio.get_running_loop()
    committed: asyncio.Future = loop.create_future()

    def on_committed(turn: turns.Turn) -> None:  # in the thread, right after the commit
        loop.call_soon_threadsafe(lambda: committed.done() or committed.set_result(turn))

    # The stream answers as soon as the user's message is committed: the rest of
    # turn_begin's after-commit work (the audit seal request, the message.created publish
    # to the group) finishes in its thread while the first event goes out.
    begin = asyncio.ensure_future(
        database_sync_to_async(turns.turn_begin)(
            user=user,
            content=data.validated_data["message"],
            conversation_id=data.validated_data["conversation_id"],
            claim=True,
            on_committed=on_committed,
        )
    )
    await asyncio.wait([begin, committed], return_when=asyncio.FIRST_COMPLETED)
    if committed.done():
        turn = committed.result()
    else:
        committed.cancel()
        try:
            turn = begin.result()
        except ApplicationError as exc:
            return sse.application_error(exc)

    queue: asyncio.Queue = asyncio.Queue()
    listener_gone = threading.Event()
    first = event_frame("message.created", message_data(turn.message), turn.message.seq)

    def sink(frame: dict) -> None:  # called from the worker thread
        loop.call_soon_threadsafe(queue.put_nowait, frame)

    delivery = runs.Delivery.in_request(sink=sink, listener_gone=listener_gone)

    async def work():
        # Whatever the outcome, its terminal event (run.completed, run.failed) went out
        # through the sink: the stream just ends.
        try:
            await begin  # its after-commit work first: the group hears message.created first
            await database_sync_to_async(turn.execute)(delivery)
        finally:
            queue.put_nowait(None)

    async def stream():
        worker = asyncio.ensure_future(work())
        try:
            yield sse.comment("open")
            yield sse.encode(first)
            while True:
                try:
                    frame = await asyncio.wait_for(queue.get(), settings.SSE_HEARTBEAT_SECONDS)
                except TimeoutError:
                    yield sse.comment("heartbeat")
                    continue
                if frame is None:
                    break
                yield sse.encode(frame)
        except asyncio.CancelledError:
            listener_gone.set()  # the client went away: stop the turn at its next event
            raise
        finally:
            if not worker.done():
                listener_gone.set()
            # No turn is left running unobserved: wait for it to stop (at its next event)
            # and log what it raised. Shielded: a thread cannot be interrupted, only told.
            try:
                await asyncio.shield(worker)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("chat stream turn failed", extra={"run_id": turn.run.pk})

    return sse.response(stream())


def resume_point(request) -> int | None:
    """``Last-Event-ID`` (what a reconnecting EventSource sends) or ``?after_seq=``; None
    means live events only. Raises ValueError when it is not a whole number >= 0."""
    return parse_resume_point(request.headers.get("Last-Event-ID") or request.GET.get("after_seq"))


def _final_error(code: str, message: str) -> str:
    return sse.encode(event_frame("error", {"code": code, "message": message, "details": {}}))


@require_GET
@sse.authenticated
async def conversation_events(request, access: Access, pk):
    """The conversation's live events. The stream lives as long as the caller may listen:
    at each heartbeat the user and tenant are checked again, and the stream ends at the
    access token's expiry. Either way the last thing sent is an ``error`` event
    (``token_expired`` or ``not_authenticated``); the client reconnects with a fresh token
    and ``Last-Event-ID`` to resume."""
    user = access.user
    try:
        after_seq = resume_point(request)
    except ValueError:
        return error_response(
            400, "validation_error", "after_seq / Last-Event-ID must be a whole number from 0 to 2^63-1."
        )
    try:
        conversation = await database_sync_to_async(conversation_selectors.conversation_get)(
            tenant=user.tenant_id, user=user, conversation_id=pk
        )
    except ApplicationError as exc:
        return sse.application_error(exc)

    subscription = ConversationSubscription(conversation.pk, after_seq)
    try:
        # Subscribe before reading the backlog (no gap), and before answering: a channel
        # layer that is down is a 503 the client can retry, not a stream that breaks.
        await subscription.open()
    except Exception as exc:
        if (dependency := dependency_failure(exc)) is None:
            raise
        logger.warning("events stream refused: %s unavailable", dependency, extra={"conversation_id": pk})
        return dependency_unavailable_response(dependency)

    async def stream():
        try:
            yield sse.comment("open")
            async for frames in subscription.backlog_pages():
                for frame in frames:
                    yield sse.encode(frame)
            checked_at = time.monotonic()
            while True:
                left = access.expires_at - time.time()
                if left <= 0:
                    yield _final_error("token_expired", "The access token expired; reconnect with a new one.")
                    return
                # Re-check the caller at every heartbeat, and at least every
                # REALTIME_RECHECK_SECONDS on a busy stream (events alone never skip it).
                frames = await subscription.next(timeout=min(settings.SSE_HEARTBEAT_SECONDS, left))
                if time.time() >= access.expires_at:
                    continue
                if not frames or time.monotonic() - checked_at >= settings.REALTIME_RECHECK_SECONDS:
                    if not await database_sync_to_async(user_still_active)(user.pk):
                        yield _final_error("not_authenticated", "The user or their tenant is no longer active.")
                        return
                    checked_at = time.monotonic()
                for frame in frames:
                    yield sse.encode(frame)
                if not frames:
                    yield sse.comment("heartbeat")
        except Exception as exc:
            if (dependency := dependency_failure(exc)) is None:
                raise
            logger.warning("events stream ended: %s unavailable", dependency, extra={"conversation_id": pk})
            yield sse.encode(sse.dependency_error_frame(dependency))
        finally:
            await subscription.close()

    return sse.response(stream())
