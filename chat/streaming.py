"""``POST /api/v1/chat/stream``: one chat turn answered as server-sent events."""

import asyncio
import threading

from channels.db import database_sync_to_async
from django.conf import settings
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from config.api import parsers, sse
from config.api.errors import ApplicationError, error_response, validation_error_response
from config.api.ratelimit import alimit_request
from conversations.events import event_frame
from conversations.serializers import message_data

from . import services
from .serializers import ChatRequestSerializer


@csrf_exempt
@require_POST
async def chat_stream(request):
    """Streams ``message.created`` (the user's message), ``run.started``, ``message.delta``,
    ``tool.call``, ``tool.result``, ``message.completed`` (the stored reply) and
    ``run.completed`` — or ``run.failed``. A client that disconnects stops the turn."""
    user = await sse.authenticate(request)
    if user is None:
        return sse.unauthenticated()
    if (refused := await alimit_request(request, user=user)) is not None:
        return refused
    try:
        body = parsers.loads(request.body or b"{}")
    except parsers.InvalidJSON as exc:
        return error_response(400, "parse_error", str(exc.detail))
    data = ChatRequestSerializer(data=body)
    if not data.is_valid():
        return validation_error_response(data.errors)
    try:
        turn = await database_sync_to_async(services.turn_begin)(
            user=user, content=data.validated_data["message"], conversation_id=data.validated_data["conversation_id"]
        )
    except ApplicationError as exc:
        return sse.application_error(exc)

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()
    first = event_frame("message.created", message_data(turn.message), turn.message.seq)

    def sink(frame: dict) -> None:  # called from the worker thread
        loop.call_soon_threadsafe(queue.put_nowait, frame)

    async def work():
        try:
            await database_sync_to_async(services.run_execute)(run_id=turn.run.pk, sink=sink, cancel=cancel)
        except services.AgentUnavailable:
            pass  # run.failed already went out through the sink
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
            cancel.set()  # the client went away: stop the turn at its next event
            raise
        finally:
            if not worker.done():
                cancel.set()

    return sse.response(stream())
