"""``GET /api/v1/conversations/{id}/events``: the conversation's live events as SSE.

The stream lives as long as the caller may listen: at each heartbeat the user and tenant are
checked again, and the stream ends at the access token's expiry. Either way the last thing
sent is an ``error`` event (``token_expired`` or ``not_authenticated``) before the stream
ends; the client reconnects with a fresh token and ``Last-Event-ID`` to resume.
"""

import logging
import time

from channels.db import database_sync_to_async
from django.conf import settings
from django.views.decorators.http import require_GET

from config.api import sse
from config.api.auth import user_still_active
from config.api.errors import (
    ApplicationError,
    dependency_failure,
    dependency_unavailable_response,
    error_response,
)
from config.api.ratelimit import alimit_request

from . import selectors
from .events import event_frame
from .subscriptions import ConversationSubscription, parse_resume_point

logger = logging.getLogger(__name__)


def resume_point(request) -> int | None:
    """``Last-Event-ID`` (what a reconnecting EventSource sends) or ``?after_seq=``; None
    means live events only. Raises ValueError when it is not a whole number >= 0."""
    return parse_resume_point(request.headers.get("Last-Event-ID") or request.GET.get("after_seq"))


def _final_error(code: str, message: str) -> str:
    return sse.encode(event_frame("error", {"code": code, "message": message, "details": {}}))


@require_GET
async def conversation_events(request, pk):
    access = await sse.access(request)
    if access is None:
        return sse.unauthenticated()
    user = access.user
    if (refused := await alimit_request(request, user=user)) is not None:
        return refused
    try:
        after_seq = resume_point(request)
    except ValueError:
        return error_response(
            400, "validation_error", "after_seq / Last-Event-ID must be a whole number from 0 to 2^63-1."
        )
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
                left = access.expires_at - time.time()
                if left <= 0:
                    yield _final_error("token_expired", "The access token expired; reconnect with a new one.")
                    return
                frames = await subscription.next(timeout=min(settings.SSE_HEARTBEAT_SECONDS, left))
                for frame in frames:
                    yield sse.encode(frame)
                if frames or time.time() >= access.expires_at:
                    continue
                if not await database_sync_to_async(user_still_active)(user.pk):
                    yield _final_error("not_authenticated", "The user or their tenant is no longer active.")
                    return
                yield sse.comment("heartbeat")
        except Exception as exc:
            if (dependency := dependency_failure(exc)) is None:
                raise
            logger.warning("events stream ended: %s unavailable", dependency, extra={"conversation_id": pk})
            yield sse.encode(sse.dependency_error_frame(dependency))
        finally:
            await subscription.close()

    return sse.response(stream())
