"""Server-sent events: the framing and the response every SSE endpoint uses.

Under ASGI the body must be an async generator (a sync iterator is consumed whole before
anything is sent). Headers keep proxies and GZip from buffering, and a comment line goes
first so the headers flush at once.
"""

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from django.http import StreamingHttpResponse

from config.core.errors import ApplicationError

from .auth import Access, aaccess_from_token, bearer_token
from .errors import dependency_unavailable_body, error_response
from .ratelimit import alimit_request_loaded


def encode(frame: dict) -> str:
    """One event: ``id:`` is the seq of a stored message (what ``Last-Event-ID`` resumes
    from); ``data:`` is the same ``{"type", "seq", "data"}`` object the WebSocket sends."""
    lines = []
    if frame.get("seq") is not None:
        lines.append(f"id: {frame['seq']}")
    lines.append(f"event: {frame['type']}")
    lines.append(f"data: {json.dumps(frame, separators=(',', ':'), default=str)}")
    return "\n".join(lines) + "\n\n"


def comment(text: str) -> str:
    return f": {text}\n\n"


def response(stream: AsyncIterator[str]) -> StreamingHttpResponse:
    result = StreamingHttpResponse(stream, content_type="text/event-stream; charset=utf-8")
    result["Cache-Control"] = "no-cache"
    result["X-Accel-Buffering"] = "no"
    return result


async def access(request) -> Access | None:
    """The caller and their token's expiry from the bearer token (``Authorization: Bearer``
    or ``?token=``), or None; the user is also set as ``request.user`` for the request log."""
    granted = await aaccess_from_token(bearer_token(request))
    if granted is not None:
        request.user = granted.user
    return granted


def unauthenticated():
    return error_response(401, "not_authenticated", "Authentication credentials were not provided or are invalid.")


def authenticated(view: Callable[..., Awaitable]) -> Callable[..., Awaitable]:
    """The preamble of every SSE view: the caller from the bearer token (else 401
    ``not_authenticated``), one request drawn from their tenant's rate limit (else 429 with
    ``Retry-After``), then ``view(request, access, *args, **kwargs)`` with the ``Access``
    (the user and the token's expiry). Input validation stays in the view."""

    @functools.wraps(view)
    async def wrapper(request, *args, **kwargs):
        granted = await access(request)
        if granted is None:
            return unauthenticated()
        if (refused := await alimit_request_loaded(request, user=granted.user)) is not None:
            return refused
        return await view(request, granted, *args, **kwargs)

    return wrapper


def dependency_error_frame(dependency: str) -> dict:
    """The last event of a stream that lost a dependency (Redis, the database): an ``error``
    event with the 503 envelope's fields; the client reconnects (``Last-Event-ID``) later."""
    return {"type": "error", "seq": None, "data": dependency_unavailable_body(dependency)["error"]}


def application_error(exc: ApplicationError):
    return error_response(exc.status, exc.code, exc.message, exc.details)
