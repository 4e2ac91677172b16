"""WebSocket interface of a conversation: ``ws/v1/conversations/{id}/``.

Auth: ``config.api.ws_auth.JWTAuthMiddleware`` (wrapped around the routes in
``config/routing.py``) turns the access token (``?token=`` or ``Sec-WebSocket-Protocol``:
``bearer, <token>`` or the token alone) into ``scope["user"]`` and the token's expiry; the
consumer reads the scope. Server frames are ``{"type", "seq", "data"}``; the client sends
``message.send``, ``message.read``, ``typing`` and ``ping``. Each client frame but ``ping``
counts against the tenant's rate limit; over it, the frame is refused with an ``error``
event (code ``rate_limited``, ``details.retry_after``).

The handshake is accepted only once the caller is checked and the socket has joined the
conversation's group: a client that sees the accept receives every later event. A caller
refused at connect gets an accepted socket closed at once with the code that says why
(a close code can only travel on an open socket): 4400 bad ``after_seq``, 4401
unauthenticated, 4403 forbidden, 4404 not found, 4409 too many open sockets for this user
(``REALTIME_MAX_SOCKETS_PER_USER``, per process), 4429 rate limited, 1013 a dependency down.

The connection lives as long as its caller may listen: every client frame first checks the
user and tenant again (one query), so does a live event when the last check is older than
``REALTIME_RECHECK_SECONDS`` (one query per user per process and period, shared by that
user's sockets), and the socket is closed with 4401 at the access token's ``exp`` (reason
``token expired``). A frame that is not JSON text answers an ``invalid_frame`` error and
the connection stays open.

Backpressure: frames wait in a per-socket outbox for a writer task. A client that does not
read (the server's send blocks) loses transient events (``message.delta``, ``typing``)
once ``REALTIME_OUTBOX_TRANSIENT_LIMIT`` frames wait, and is closed with 4408 (reason
``too slow: resume from your last seq``) once ``REALTIME_OUTBOX_LIMIT`` wait; stored
messages stay resumable with ``?after_seq=``. However the consumer ends (client close, a
handler that raised, cancellation), it leaves the conversation's group, the per-user count
and the ``WEBSOCKET_CONNECTIONS`` gauge.
"""

import asyncio
import logging
import time
from collections import Counter
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from rest_framework import serializers

from config.api import parsers
from config.api.auth import user_still_active
from config.api.errors import dependency_failure, validation_message
from config.api.ratelimit import atenant_usage
from config.core import metrics
from config.core.errors import ApplicationError, Forbidden, NotFound
from conversations import selectors as conversation_selectors
from conversations import services as conversation_services
from conversations.events import event_frame, publish
from conversations.serializers import MessageCreateSerializer
from conversations.subscriptions import ConversationSubscription, parse_resume_point

from .services import turns

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
# The client did not read its frames fast enough: reconnect with ?after_seq=<last seq seen>.
CLOSE_TOO_SLOW = 4408
# The user already holds REALTIME_MAX_SOCKETS_PER_USER open sockets on this process.
CLOSE_TOO_MANY_SOCKETS = 4409
CLOSE_RATE_LIMITED = 4429
# RFC 6455 "Try Again Later": the database or Redis is unavailable; reconnect with after_seq.
CLOSE_TRY_AGAIN_LATER = 1013
TYPING_INTERVAL_SECONDS = 1.0
# Frames a slow reader may lose: they are never stored, so nothing is owed to the client.
TRANSIENT_EVENTS = {"message.delta", "typing"}
# Seconds a close frame may wait behind a client that does not read before the consumer
# simply stops (the server then drops the connection).
CLOSE_SEND_TIMEOUT = 5.0

logger = logging.getLogger(__name__)

# Open sockets per user id in this process (the per-user cap).
_open_sockets: Counter = Counter()


class _RecentChecks:
    """The live-event re-check of a user, shared by that user's sockets in this process.

    Before a live event is passed on, a socket whose last check is older than
    REALTIME_RECHECK_SECONDS checks its user again; 500 sockets of one user would be 500
    queries on the one database thread at the same event. One check (in flight or younger
    than the period) answers them all."""

    def __init__(self):
        self.results: dict[int, tuple[float, asyncio.Future]] = {}

    async def user_active(self, user_id: int) -> bool:
        now = time.monotonic()
        entry = self.results.get(user_id)
        if entry is not None and now - entry[0] < settings.REALTIME_RECHECK_SECONDS:
            fut = entry[1]
            if fut.get_loop() is asyncio.get_running_loop():
                return await asyncio.shield(fut)
        fut = asyncio.ensure_future(database_sync_to_async(user_still_active)(user_id))
        if len(self.results) >= 10_000:  # keep only the checks still worth sharing
            period = settings.REALTIME_RECHECK_SECONDS
            self.results = {k: v for k, v in self.results.items() if now - v[0] < period}
        self.results[user_id] = (now, fut)
        try:
            return await asyncio.shield(fut)
        except BaseException:
            if self.results.get(user_id, (None, None))[1] is fut:
                del self.results[user_id]  # a failed check is not shared
            raise


_recent_checks = _RecentChecks()


class InvalidFrame(ValueError):
    """A client frame that is not a JSON text frame."""


def decode_frame(text_data: str | None, bytes_data: bytes | None):
    """The JSON value of one client frame. The one place frames are decoded; raises
    InvalidFrame for binary frames and text that is not JSON."""
    if text_data is None:
        raise InvalidFrame("Frames are JSON text; binary frames are not accepted.")
    try:
        # The REST bodies' strict loader: no NUL, lone surrogates, non-finite numbers or
        # deep nesting reach a handler (PostgreSQL refuses the first three).
        return parsers.loads(text_data)
    except parsers.InvalidJSON as exc:
        raise InvalidFrame(str(exc.detail)) from exc


class MessageReadFrameSerializer(serializers.Serializer):
    message_id = serializers.IntegerField(min_value=1)


class ConversationConsumer(AsyncJsonWebsocketConsumer):
    user = None
    expires_at = float("inf")
    subscription: ConversationSubscription | None = None
    expiry: asyncio.Task | None = None
    closing = False
    counted = False
    accepted = False
    capped_user_id: int | None = None
    dropped = 0  # transient frames a slow reader lost
    outbox: asyncio.Queue | None = None
    writer: asyncio.Task | None = None
    last_typing = float("-inf")
    checked_at = float("-inf")

    async def _cleanup(self):
        """Leaves the group, the per-user count and the gauge; runs once however the
        consumer ends."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self._stop_writer()
        if self.capped_user_id is not None:
            _open_sockets[self.capped_user_id] -= 1
            if _open_sockets[self.capped_user_id] <= 0:
                del _open_sockets[self.capped_user_id]
            self.capped_user_id = None
        if self.counted:
            metrics.WEBSOCKET_CONNECTIONS.dec()
            self.counted = False
        if self.subscription is not None:
            subscription, self.subscription = self.subscription, None
            await subscription.close()

    async def __call__(self, scope, receive, send):
        # disconnect() is skipped when a handler raises or the consumer is cancelled, so the
        # cleanup runs here. Channels' own loop reads this socket's channel on the layer:
        # with Redis gone that read raises outside every handler. Close 1013 (try again
        # later), not a crash.
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            if (dependency := dependency_failure(exc)) is None:
                raise
            logger.warning(
                "websocket closed: %s unavailable", dependency, extra={"conversation_id": self.conversation_id}
            )
            try:
                await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER})
            except Exception:  # noqa: BLE001 - the socket is already gone
                pass
        finally:
            await self._cleanup()

    async def connect(self):
        try:
            await self._open()
        except Exception as exc:
            if (dependency := dependency_failure(exc)) is None:
                raise
            logger.warning(
                "websocket refused: %s unavailable", dependency, extra={"conversation_id": self.conversation_id}
            )
            await self._close(CLOSE_TRY_AGAIN_LATER)

    async def _open(self):
        # The handshake is accepted last, once the caller is checked and the socket is in
        # the group; a refusal accepts only to carry its close code (_close).
        if dependency := self.scope.get("auth_unavailable"):
            logger.warning(
                "websocket refused: %s unavailable", dependency, extra={"conversation_id": self.conversation_id}
            )
            return await self._close(CLOSE_TRY_AGAIN_LATER)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self._close(CLOSE_UNAUTHENTICATED)
        self.user, self.expires_at = user, self.scope["token_expires_at"]
        self.checked_at = time.monotonic()
        # Connecting is one request against the tenant's budget; client frames are more.
        if (await atenant_usage(user=self.user)).limited:
            return await self._close(CLOSE_RATE_LIMITED)
        conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        try:
            await database_sync_to_async(conversation_selectors.conversation_for_listener)(
                user=self.user, conversation_id=conversation_id
            )
        except Forbidden:
            return await self._close(CLOSE_FORBIDDEN)
        except NotFound:
            return await self._close(CLOSE_NOT_FOUND)
        query = parse_qs(self.scope.get("query_string", b"").decode(), keep_blank_values=True)
        try:
            after_seq = parse_resume_point(query["after_seq"][0] if "after_seq" in query else None)
        except ValueError:
            return await self._close(CLOSE_BAD_REQUEST, "after_seq must be a whole number >= 0")
        if _open_sockets[self.user.pk] >= settings.REALTIME_MAX_SOCKETS_PER_USER:
            return await self._close(CLOSE_TOO_MANY_SOCKETS, "too many open sockets for this user")
        _open_sockets[self.user.pk] += 1
        self.capped_user_id = self.user.pk
        # Subscribe first, then replay what is stored; the group's events wait in the
        # channel until connect() returns and are deduplicated by seq.
        self.subscription = ConversationSubscription(conversation_id, after_seq, channel=self.channel_name)
        metrics.WEBSOCKET_CONNECTIONS.inc()
        self.counted = True
        await self.subscription.open()
        await self._accept()
        self.expiry = asyncio.ensure_future(self._watch())
        # The backlog (only with ?after_seq=) goes out before the outbox starts, page by
        # page, each page one query; a client that does not read slows the replay down.
        async for frames in self.subscription.backlog_pages():
            for frame in frames:
                await super().send_json(frame)
        self.outbox = asyncio.Queue()
        self.writer = asyncio.ensure_future(self._write())

    async def _accept(self):
        if not self.accepted:
            self.accepted = True
            await self.accept(subprotocol=self.scope.get("accepted_subprotocol"))

    async def _write(self):
        """Sends the outbox in order; blocks while the server cannot take more (a client
        that does not read), which is what the outbox bounds measure."""
        while True:
            text = await self.outbox.get()
            await self.send(text_data=text)

    def _stop_writer(self):
        if self.writer is not None:
            self.writer.cancel()
            self.writer = None

    async def send_json(self, content, close=False):
        return await self._send_frame(content, close=close)

    async def _send_frame(self, content: dict, text: str | None = None, close=False):
        """Queues a frame (its JSON ``text`` when the publisher encoded it already) for the
        writer (directly before the outbox exists). Past REALTIME_OUTBOX_TRANSIENT_LIMIT
        waiting frames a transient event is dropped; past REALTIME_OUTBOX_LIMIT the socket is
        closed with 4408 (resume from your last seq)."""
        if self.closing and self.accepted:
            return None  # being closed (4408, 4401...): nothing more goes out
        if text is None:
            text = await self.encode_json(content)
        if self.outbox is None or close:
            return await self.send(text_data=text, close=close)
        waiting = self.outbox.qsize()
        if waiting >= settings.REALTIME_OUTBOX_LIMIT:
            return await self._close_too_slow()
        if waiting >= settings.REALTIME_OUTBOX_TRANSIENT_LIMIT and content.get("type") in TRANSIENT_EVENTS:
            self.dropped += 1
            return None
        self.outbox.put_nowait(text)
        return None

    async def _close_too_slow(self):
        logger.warning(
            "websocket closed: the client does not read",
            extra={"conversation_id": self.conversation_id, "waiting": self.outbox.qsize()},
        )
        self._stop_writer()
        self.outbox = None  # what waited is dropped: the client resumes from its last seq
        self.closing = True
        try:
            await asyncio.wait_for(
                self.close(code=CLOSE_TOO_SLOW, reason="too slow: resume from your last seq"), CLOSE_SEND_TIMEOUT
            )
        except TimeoutError:
            raise StopConsumer() from None  # the close frame cannot get out either: stop

    @property
    def conversation_id(self) -> int | None:
        return self.subscription.conversation_id if self.subscription else None

    async def _close(self, code: int, reason: str | None = None):
        self.closing = True
        self._stop_writer()
        await self._accept()  # a close code travels only on an accepted socket
        await self.close(code=code, reason=reason)

    async def _watch(self):
        """Closes the socket at the token's expiry and, until then, renews the group
        membership (REALTIME_GROUP_EXPIRY_SECONDS): a member whose socket died without a
        discard stops being renewed and the layer drops it at the next send after expiry."""
        while not self.closing:
            left = self.expires_at - time.time()
            if left <= 0:
                try:
                    await self._close(CLOSE_UNAUTHENTICATED, "token expired")
                except Exception:  # the socket went away meanwhile; cleanup follows anyway
                    logger.info("websocket already gone at token expiry", exc_info=True)
                return
            await asyncio.sleep(min(left, settings.REALTIME_GROUP_EXPIRY_SECONDS / 3))
            if self.subscription is not None and time.time() < self.expires_at:
                try:
                    await self.subscription.renew()
                except Exception:  # noqa: BLE001 - the layer is down: the next renewal retries
                    logger.warning("could not renew group membership", extra={"conversation_id": self.conversation_id})

    async def _still_allowed(self) -> bool:
        """Checks the caller again before a client frame is served; closes with 4401 if not."""
        if time.time() >= self.expires_at:
            await self._close(CLOSE_UNAUTHENTICATED, "token expired")
            return False
        if not await database_sync_to_async(user_still_active)(self.user.pk):
            await self._close(CLOSE_UNAUTHENTICATED, "user or tenant inactive")
            return False
        self.checked_at = time.monotonic()
        return True

    async def _recheck_shared(self) -> bool:
        """``_still_allowed`` for the live-event path: the database check is shared by the
        user's sockets in this process (``_RecentChecks``)."""
        if time.time() >= self.expires_at:
            await self._close(CLOSE_UNAUTHENTICATED, "token expired")
            return False
        if not await _recent_checks.user_active(self.user.pk):
            await self._close(CLOSE_UNAUTHENTICATED, "user or tenant inactive")
            return False
        self.checked_at = time.monotonic()
        return True

    async def disconnect(self, code):
        await self._cleanup()

    async def dispatch(self, message):
        # channels >= 4.2 runs close_old_connections() through sync_to_async before every
        # handler: one hop to the single sync thread per event and socket, 500 hops queued
        # behind each other for one event to 500 sockets (py-spy under bench/ws_fanout.py:
        # a quarter of the server's samples). The live-event handler reaches the database
        # only through database_sync_to_async, which closes stale connections around its
        # own call, so it skips that hop; every other message keeps the library's path.
        if message.get("type") == "conversation.event":
            return await self.conversation_event(message)
        return await super().dispatch(message)

    async def conversation_event(self, event):
        if self.closing or self.subscription is None:
            return
        # A listener that never sends a frame is re-checked too, at most every
        # REALTIME_RECHECK_SECONDS, before it is given an event.
        if time.monotonic() - self.checked_at >= settings.REALTIME_RECHECK_SECONDS and not await self._recheck_shared():
            return
        frame, text = event["frame"], event.get("text")
        try:
            frames = await self.subscription.admit_live(frame)  # may read missed ones
        except Exception as exc:
            if (dependency := dependency_failure(exc)) is None:
                raise
            # A gap cannot be filled now: close, and the client resumes from its last seq.
            logger.warning(
                "websocket closed: %s unavailable", dependency, extra={"conversation_id": self.conversation_id}
            )
            return await self._close(CLOSE_TRY_AGAIN_LATER)
        for admitted in frames:
            # The publisher's text goes out as is; frames read from the database are encoded here.
            await self._send_frame(admitted, text if admitted is frame else None)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if self.closing or self.user is None or self.subscription is None:
            return None  # refused at connect or being closed: nothing more is served
        try:
            if not await self._still_allowed():
                return None
        except Exception as exc:
            if (dependency := dependency_failure(exc)) is None:
                raise
            # The caller cannot be checked right now: refuse this frame, keep the socket.
            return await self._send_dependency_error(dependency, kind="recheck")
        try:
            content = decode_frame(text_data, bytes_data)
        except InvalidFrame as exc:
            return await self.send_error("invalid_frame", str(exc))
        return await self.receive_json(content)

    async def _send_dependency_error(self, dependency: str, *, kind: str, ref=None):
        logger.warning("websocket frame refused: %s unavailable", dependency, extra={"frame_type": kind})
        await self.send_error(
            "dependency_unavailable",
            "A service this request needs is unavailable; retry shortly.",
            {"dependency": dependency},
            ref=ref,
        )

    async def send_error(self, code: str, message: str, details=None, ref=None):
        await self.send_json(
            event_frame("error", {"code": code, "message": message, "details": details or {}, "ref": ref})
        )

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            return await self.send_error("invalid_frame", 'Frames are JSON objects with a "type".')
        kind, ref = content["type"], content.get("ref")
        handler = {
            "message.send": self.on_message_send,
            "message.read": self.on_message_read,
            "typing": self.on_typing,
            "ping": self.on_ping,
        }.get(kind)
        if handler is None:
            return await self.send_error("unknown_type", f"Unknown frame type {kind!r}.", ref=ref)
        if kind == "typing":
            # Typing indicators are chatty and cheap: not drawn from the request budget,
            # but at most one a second per connection is passed on.
            now = time.monotonic()
            if now - self.last_typing < TYPING_INTERVAL_SECONDS:
                return None
            self.last_typing = now
        elif kind != "ping":  # keep-alives do no work and do not draw on the budget
            usage = await atenant_usage(user=self.user)
            if usage.limited:
                return await self.send_error(
                    "rate_limited",
                    f"Rate limit exceeded. Try again in {usage.retry_after} seconds.",
                    {"limit": usage.limit, "retry_after": usage.retry_after},
                    ref=ref,
                )
        try:
            await handler(content, ref)
        except ApplicationError as exc:
            await self.send_error(exc.code, exc.message, exc.details, ref=ref)
        except Exception as exc:
            if (dependency := dependency_failure(exc)) is not None:
                return await self._send_dependency_error(dependency, kind=kind, ref=ref)
            # One bad frame must not drop the connection; the log has the details.
            logger.exception("websocket frame failed", extra={"frame_type": kind})
            await self.send_error("internal_error", "An unexpected error occurred.", ref=ref)

    @staticmethod
    def _validated(serializer) -> dict:
        if not serializer.is_valid():
            message, details = validation_message(serializer.errors)
            raise ApplicationError(message, code="validation_error", details=details)
        return serializer.validated_data

    async def on_message_send(self, content, ref):
        data = self._validated(MessageCreateSerializer(data=content))
        turn = await database_sync_to_async(turns.turn_enqueue)(
            user=self.user, conversation_id=self.conversation_id, **data
        )
        await self.send_json(
            event_frame(
                "message.ack",
                {
                    "ref": ref,
                    "message_id": turn.message.pk,
                    "seq": turn.message.seq,
                    "run_id": turn.run.pk if turn.run is not None else None,
                    "client_message_id": turn.message.client_message_id,
                    "duplicate": not turn.created,
                },
            )
        )

    async def on_message_read(self, content, ref):
        message_id = self._validated(MessageReadFrameSerializer(data=content))["message_id"]
        await database_sync_to_async(conversation_services.message_read)(
            user=self.user, conversation_id=self.conversation_id, message_id=message_id
        )

    async def on_typing(self, content, ref):
        data = {"user_id": self.user.pk, "is_typing": bool(content.get("is_typing", True))}
        await database_sync_to_async(publish)(self.conversation_id, "typing", data)

    async def on_ping(self, content, ref):
        await self.send_json(event_frame("pong", {"ref": ref}))
