"""``GET /api/v1/conversations/{id}/events``: the conversation's live events as SSE."""

from channels.db import database_sync_to_async
from django.conf import settings
from django.views.decorators.http import require_GET

from config.api import sse
from config.api.errors import ApplicationError, error_response
from config.api.fields import MAX_ID
from config.api.ratelimit import alimit_request

from . import selectors
from .stream import ConversationSubscription


def resume_point(request) -> int | None:
    """``Last-Event-ID`` (what a reconnecting EventSource sends) or ``?after_seq=``; None
    means live events only. Raises ValueError when it is not a whole number >= 0."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after_seq")
    if raw in (None, ""):
        return None
    value = int(raw)
    if not 0 <= value <= MAX_ID:  # past bigint it names no message (SQLite: OverflowError)
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

    async def stream():
        try:
            await subscription.open()  # subscribe before reading the backlog: no gap
            yield sse.comment("open")
            for frame in await subscription.backlog():
                yield sse.encode(frame)
            while True:
                frames = await subscription.next(timeout=settings.SSE_HEARTBEAT_SECONDS)
                if not frames:
                    yield sse.comment("heartbeat")
                for frame in frames:
                    yield sse.encode(frame)
        finally:
            await subscription.close()

    return sse.response(stream())
