"""``GET /api/v1/conversations/{id}/events``: the conversation's live events as SSE."""

import logging

from channels.db import database_sync_to_async
from django.conf import settings
from django.views.decorators.http import require_GET

from config.api import sse
from config.api.errors import (
    ApplicationError,
    dependency_failure,
    dependency_unavailable_response,
    error_response,
)
from config.api.ratelimit import alimit_request

from . import selectors
from .stream import ConversationSubscription

logger = logging.getLogger(__name__)


def resume_point(request) -> int | None:
    """``Last-Event-ID`` (what a reconnecting EventSource sends) or ``?after_seq=``; None
    means live events only. Raises ValueError when it is not a whole number >= 0."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after_seq")
    if raw in (None, ""):
        return None
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


@require_GET
async def conversation_events(request, pk):
    user = await sse.authenticate(request)
    if user is None:
        return sse.unauthenticated()
    if (refused := await alimit_request(request, user=user)) is not None:
        return refused
    try:
        after_seq = resume_point(request)
    except ValueError:
        return error_response(400, "validation_error", "after_seq / Last-Event-ID must be a whole number >= 0.")
    try:
        conversation = await database_sync_to_async(selectors.conversation_get)(
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
            for frame in await subscription.backlog():
                yield sse.encode(frame)
            while True:
                frames = await subscription.next(timeout=settings.SSE_HEARTBEAT_SECONDS)
                if not frames:
                    yield sse.comment("heartbeat")
                for frame in frames:
                    yield sse.encode(frame)
        except Exception as exc:
            if (dependency := dependency_failure(exc)) is None:
                raise
            logger.warning("events stream ended: %s unavailable", dependency, extra={"conversation_id": pk})
            yield sse.encode(sse.dependency_error_frame(dependency))
        finally:
            await subscription.close()

    return sse.response(stream())
