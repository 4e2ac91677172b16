"""WebSocket interface of a conversation: ``ws/v1/conversations/{id}/``.

Auth: the access token as ``?token=`` or in ``Sec-WebSocket-Protocol`` (``bearer, <token>``
or the token alone). Server frames are ``{"type", "seq", "data"}``; the client sends
``message.send``, ``message.read``, ``typing`` and ``ping``. Close codes: 4401
unauthenticated, 4403 forbidden, 4404 not found, 4429 rate limited (at connect). Each client
frame but ``ping`` counts against the tenant's rate limit; over it, the frame is refused
with an ``error`` event (code ``rate_limited``, ``details.retry_after``).
"""

import logging
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from rest_framework import serializers

from config.api import metrics
from config.api.auth import user_from_token
from config.api.errors import ApplicationError, Forbidden, NotFound, dependency_failure, validation_message
from config.api.ratelimit import atenant_usage
from conversations import selectors as conversation_selectors
from conversations import services as conversation_services
from conversations.events import event_frame, group_name, publish
from conversations.serializers import MessageCreateSerializer
from conversations.stream import SeqFilter, stored_frames

from . import services

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_RATE_LIMITED = 4429
# RFC 6455 "Try Again Later": the database or Redis is unavailable; reconnect with after_seq.
CLOSE_TRY_AGAIN_LATER = 1013
TYPING_INTERVAL_SECONDS = 1.0

logger = logging.getLogger(__name__)


class MessageReadFrameSerializer(serializers.Serializer):
    message_id = serializers.IntegerField(min_value=1)


class ConversationConsumer(AsyncJsonWebsocketConsumer):
    user = None
    conversation_id: int | None = None
    counted = False
    last_typing = float("-inf")

    def _token_and_subprotocol(self) -> tuple[str | None, str | None]:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        if query.get("token"):
            return query["token"][0], None
        protocols = self.scope.get("subprotocols") or []
        if len(protocols) >= 2 and protocols[0].lower() == "bearer":
            return protocols[1], protocols[0]
        if len(protocols) == 1:
            return protocols[0], protocols[0]
        return None, None

    async def __call__(self, scope, receive, send):
        # Channels' own loop reads this socket's channel on the layer: with Redis gone that
        # read raises outside every handler. Close 1013 (try again later), not a crash.
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
            if self.counted:
                metrics.WEBSOCKET_CONNECTIONS.dec()
                self.counted = False

    async def connect(self):
        try:
            await self._open()
        except Exception as exc:
            if (dependency := dependency_failure(exc)) is None:
                raise
            logger.warning(
                "websocket refused: %s unavailable", dependency, extra={"conversation_id": self.conversation_id}
            )
            await self.close(code=CLOSE_TRY_AGAIN_LATER)

    async def _open(self):
        token, subprotocol = self._token_and_subprotocol()
        # Accept first: a close code can only be sent on an open socket.
        await self.accept(subprotocol=subprotocol)
        self.user = await database_sync_to_async(user_from_token)(token)
        if self.user is None:
            return await self.close(code=CLOSE_UNAUTHENTICATED)
        # Connecting is one request against the tenant's budget; client frames are more.
        if (await atenant_usage(user=self.user)).limited:
            return await self.close(code=CLOSE_RATE_LIMITED)
        self.conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        try:
            await database_sync_to_async(conversation_selectors.conversation_for_listener)(
                user=self.user, conversation_id=self.conversation_id
            )
        except Forbidden:
            return await self.close(code=CLOSE_FORBIDDEN)
        except NotFound:
            return await self.close(code=CLOSE_NOT_FOUND)
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            after_seq = int(query["after_seq"][0]) if query.get("after_seq") else None
        except ValueError:
            after_seq = None
        # Subscribe first, then replay what is stored; the group's events wait in the
        # channel until connect() returns and are deduplicated by seq.
        self.filter = SeqFilter(self.conversation_id, after_seq or 0)
        await self.channel_layer.group_add(group_name(self.conversation_id), self.channel_name)
        metrics.WEBSOCKET_CONNECTIONS.inc()
        self.counted = True
        if after_seq is not None:
            for frame in await database_sync_to_async(stored_frames)(self.conversation_id, after_seq):
                if self.filter.admit(frame):
                    await self.send_json(frame)

    async def disconnect(self, code):
        if self.conversation_id is not None:
            try:
                await self.channel_layer.group_discard(group_name(self.conversation_id), self.channel_name)
            except Exception as exc:
                if dependency_failure(exc) is None:
                    raise  # a Redis outage leaves a membership that expires on its own
        if self.counted:
            metrics.WEBSOCKET_CONNECTIONS.dec()
            self.counted = False

    async def conversation_event(self, event):
        try:
            frames = await self.filter.admit_live(event["frame"])  # may read missed ones
        except Exception as exc:
            if (dependency := dependency_failure(exc)) is None:
                raise
            # A gap cannot be filled now: close, and the client resumes from its last seq.
            logger.warning(
                "websocket closed: %s unavailable", dependency, extra={"conversation_id": self.conversation_id}
            )
            return await self.close(code=CLOSE_TRY_AGAIN_LATER)
        for frame in frames:
            await self.send_json(frame)

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
                logger.warning("websocket frame refused: %s unavailable", dependency, extra={"frame_type": kind})
                return await self.send_error(
                    "dependency_unavailable",
                    "A service this request needs is unavailable; retry shortly.",
                    {"dependency": dependency},
                    ref=ref,
                )
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
        turn = await database_sync_to_async(services.message_post)(
            user=self.user, conversation_id=self.conversation_id, **data
        )
        await self.send_json(
            event_frame(
                "message.ack",
                {
                    "ref": ref,
                    "message_id": turn.message.pk,
                    "seq": turn.message.seq,
                    "run_id": turn.run.pk,
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
