"""The channel layer's message format for heavy fan-out.

The pub/sub layer (channels-redis' ``RedisPubSubChannelLayer``) reads one Redis message per
group event and puts the same bytes object on the queue of every local member; each
member's ``receive()`` then decodes it again: one event for 500 sockets was 500 msgpack
decodings (py-spy under bench/ws_fanout.py: 12% of the web worker's samples once the rest
was cut). ``SharedDecodeMsgPackSerializer`` is msgpack that remembers the last few
messages it decoded, by identity of the bytes, so that event is decoded once.

The price: every local member receives the same dict. Consumers read their messages and
never change them (``chat/consumers.py``, ``conversations/subscriptions.py``); a handler
that wants to change one must copy it first.
"""

from channels_redis.serializers import MsgPackSerializer, registry

FORMAT = "msgpack-shared"


class SharedDecodeMsgPackSerializer(MsgPackSerializer):
    KEEP = 16  # events in flight at once in one process is a handful

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # (raw bytes, decoded) pairs, newest last. A tuple replaced whole, never mutated: a
        # reader in another thread (the layer is per event loop, this object is not) sees a
        # consistent snapshot.
        self._recent: tuple = ()

    def deserialize(self, message):
        recent = self._recent
        for raw, decoded in reversed(recent):
            if raw is message:
                return decoded
        decoded = super().deserialize(message)
        self._recent = (*recent[-(self.KEEP - 1) :], (message, decoded))
        return decoded


def register() -> str:
    """Makes the format known to channels-redis (idempotent); returns its name."""
    registry.register_serializer(FORMAT, SharedDecodeMsgPackSerializer)
    return FORMAT
