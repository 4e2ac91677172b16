"""Flow control for streamed HTTP responses under daphne.

Daphne writes every ``http.response.body`` message straight into Twisted's transport,
whose write buffer grows without bound when the client reads slower than the app
produces: a 1 GiB download to a slow client grew the server by 1.6 GiB (bench/files_transfer.py).
Twisted's own answer is a push producer: the transport calls ``pauseProducing`` when its
buffer is full and ``resumeProducing`` once it has drained. This ASGI middleware registers
one per streamed response and makes ``send`` wait while paused, so the app (a streamed
download, an SSE stream, an export) produces only as fast as the socket drains.

Servers other than daphne (uvicorn, the test clients) have their own flow control or none
to hook into: the middleware passes through untouched when ``send`` is not daphne's.
"""

import asyncio
import functools
import logging

logger = logging.getLogger(__name__)


def _daphne_request(send):
    """The Twisted request behind daphne's ``send`` (``partial(server.handle_reply,
    protocol)``), or None under any other server."""
    if isinstance(send, functools.partial) and send.args:
        request = send.args[0]
        if hasattr(request, "registerProducer") and hasattr(request, "unregisterProducer"):
            return request
    return None


class _Gate:
    """A Twisted push producer that opens and closes an asyncio event (Twisted runs on
    daphne's asyncio loop, so its calls land on the same thread)."""

    def __init__(self):
        self.open = asyncio.Event()
        self.open.set()

    def pauseProducing(self):  # noqa: N802 (Twisted's interface)
        self.open.clear()

    def resumeProducing(self):  # noqa: N802
        self.open.set()

    def stopProducing(self):  # noqa: N802 - the connection is gone: never block the app again
        self.open.set()


def _as_push_producer(gate):
    from twisted.internet.interfaces import IPushProducer
    from zope.interface import directlyProvides

    directlyProvides(gate, IPushProducer)
    return gate


class BackpressureMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        request = _daphne_request(send) if scope.get("type") == "http" else None
        if request is None:
            return await self.app(scope, receive, send)

        gate = None

        def release():
            nonlocal gate
            if gate is not None:
                gate = None
                try:
                    request.unregisterProducer()
                except Exception:  # noqa: BLE001 - the connection may be gone already
                    logger.debug("unregisterProducer failed", exc_info=True)

        async def paced_send(message):
            nonlocal gate
            if message.get("type") == "http.response.body":
                if message.get("more_body", False):
                    if gate is None and request.producer is None:
                        gate = _as_push_producer(_Gate())
                        request.registerProducer(gate, True)
                    if gate is not None:
                        await gate.open.wait()
                else:
                    release()  # before the last write: finish() must find no producer
            await send(message)

        try:
            return await self.app(scope, receive, paced_send)
        finally:
            release()
