"""WebSocket interface of a conversation: ``ws/v1/conversations/{id}/``.

Auth: ``config.api.ws_auth.JWTAuthMiddleware`` (wrapped around the routes in
``config/routing.py``) turns the access token (``?token=`` or ``Sec-WebSocket-Protocol``:
``bearer, <token>`` or the token alone) into ``scope["user"]`` and the token's expiry; the
consumer reads the scope. Server frames are ``{"type", "seq", "data"}``; the client sends
``message.send``, ``message.read``, ``typing`` and ``ping``. Close codes: 4401
unauthenticated, 4403 forbidden, 4404 not found, 4429 rate limited (at connect). Each client
frame but ``ping`` counts against the tenant's rate limit; over it, the frame is refused
with an ``error`` event (code ``rate_limited``, ``details.retry_after``).

The connection lives as long as its caller may listen: every client frame first checks the
user and tenant again (one query), so does a live event when the last check is older than
``REALTIME_RECHECK_SECONDS``, and the socket is closed with 4401 at the access token's
``exp`` (reason ``token expired``). A bad ``?after_seq=`` closes it with 4400. A frame that
is not JSON text answers an ``invalid_frame`` error and the connection stays open. However
the consumer ends (client close, a handler that raised, cancellation), it leaves the
conversation's group and the ``WEBSOCKET_CONNECTIONS`` gauge.
"""

import asyncio
import logging
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
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
CLOSE_RATE_LIMITED = 4429
# RFC 6455 "Try Again Later": the database or Redis is unavailable; reconnect with after_seq.
CLOSE_TRY_AGAIN_LATER = 1013
TYPING_INTERVAL_SECONDS = 1.0

logger = logging.getLogger(__name__)


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
    last_typing = float("-inf")
    checked_at = float("-inf")

    async def _cleanup(self):
        """Leaves the group and the gauge; runs once however the consumer ends."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
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
        # Accept first: a close code can only be sent on an open socket.
        await self.accept(subprotocol=self.scope.get("accepted_subprotocol"))
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
        # Subscribe first, then replay what is stored; the group's events wait in the
        # channel until connect() returns and are deduplicated by seq.
        self.subscription = ConversationSubscription(conversation_id, after_seq, channel=self.channel_name)
        metrics.WEBSOCKET_CONNECTIONS.inc()
        self.counted = True
        await self.subscription.open()
        self.expiry = asyncio.ensure_future(self._close_at_expiry())
        for frame in await self.subscription.backlog():
            await self.send_json(frame)

    @property
    def conversation_id(self) -> int | None:
        return self.subscription.conversation_id if self.subscription else None

    async def _close(self, code: int, reason: str | None = None):
        self.closing = True
        await self.close(code=code, reason=reason)

    async def _close_at_expiry(self):
        await asyncio.sleep(max(0.0, self.expires_at - time.time()))
        if not self.closing:
            try:
                await self._close(CLOSE_UNAUTHENTICATED, "token expired")
            except Exception:  # the socket went away meanwhile; cleanup follows anyway
                logger.info("websocket already gone at token expiry", exc_info=True)

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

    async def disconnect(self, code):
        await self._cleanup()

    async def conversation_event(self, event):
        if self.closing or self.subscription is None:
            return
        # A listener that never sends a frame is re-checked too, at most every
        # REALTIME_RECHECK_SECONDS, before it is given an event.
        if time.monotonic() - self.checked_at >= settings.REALTIME_RECHECK_SECONDS and not await self._still_allowed():
            return
        try:
            frames = await self.subscription.admit_live(event["frame"])  # may read missed ones
        except Exception as exc:
            if (dependency := dependency_failure(exc)) is None:
                raise
            # A gap cannot be filled now: close, and the client resumes from its last seq.
            logger.warning(
                "websocket closed: %s unavailable", dependency, extra={"conversation_id": self.conversation_id}
            )
            return await self._close(CLOSE_TRY_AGAIN_LATER)
        for frame in frames:
            await self.send_json(frame)

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
