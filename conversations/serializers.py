import functools

from rest_framework import serializers

from config.api.fields import MAX_ID, StrictCharField

from .models import MAX_MESSAGE_CHARS, Conversation, Message


class ConversationSerializer(serializers.ModelSerializer):
    owner_id = serializers.IntegerField(read_only=True)
    participant_ids = serializers.SerializerMethodField()

    class Meta:
        model = Conversation
        fields = [
            "id",
            "title",
            "channel",
            "status",
            "metadata",
            "owner_id",
            "participant_ids",
            "last_seq",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_participant_ids(self, obj) -> list[int]:
        return sorted(p.pk for p in obj.participants.all())


class ConversationCreateSerializer(serializers.Serializer):
    title = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    channel = serializers.ChoiceField(choices=Conversation.Channel.choices, default=Conversation.Channel.API)
    metadata = serializers.JSONField(required=False, default=dict)
    participant_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False, default=list
    )

    def validate_channel(self, value):
        # A conversation's channel says where its messages go: an external one is always
        # bound to a contact (the hub's create body), never a label alone.
        if value != Conversation.Channel.API:
            raise serializers.ValidationError(
                "A conversation on an external channel is created bound to a contact: "
                "send channel_account_id and contact."
            )
        return value

    def validate_metadata(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("metadata must be an object.")
        return value


class ConversationUpdateSerializer(serializers.Serializer):
    title = StrictCharField(max_length=200, required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=Conversation.Status.choices, required=False)
    metadata = serializers.JSONField(required=False)

    def validate_metadata(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("metadata must be an object.")
        return value


class MessageSerializer(serializers.ModelSerializer):
    """The one wire shape of a stored message: REST bodies, the durable events on SSE and
    WebSocket (``message_data``) and the exports all render a message through it, so they
    cannot drift. Datetimes are DRF's ISO 8601 spelling, UTC as ``Z``."""

    conversation_id = serializers.IntegerField(read_only=True)
    sender_id = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "conversation_id",
            "seq",
            "role",
            "sender_id",
            "content",
            "tool_calls",
            "attachments",
            "status",
            "client_message_id",
            "created_at",
            "read_at",
        ]
        read_only_fields = fields


@functools.cache
def _message_renderer() -> MessageSerializer:
    # Built once: a ModelSerializer builds its fields from the model on every instantiation
    # (the profile of the 202 path: DRF's get_fields ~10% of its CPU, one per message
    # rendered). Its fields keep no per-call state, so one instance renders every message,
    # through the very same fields as MessageSerializer(message).data.
    return MessageSerializer()


def message_data(message: Message) -> dict:
    """A stored message as every interface sends it (a plain dict: it also travels through
    the channel layer)."""
    return dict(_message_renderer().to_representation(message))


# How many files one message may name (its attachments).
MAX_ATTACHMENTS = 10


class MessageCreateSerializer(serializers.Serializer):
    content = StrictCharField(max_length=MAX_MESSAGE_CHARS, trim_whitespace=False)
    # Ids of ready files of the caller's tenant (POST /files/ ... /complete); stored as
    # their descriptors (conversations/attachments.py).
    attachments = serializers.ListField(
        child=serializers.UUIDField(), required=False, default=list, max_length=MAX_ATTACHMENTS
    )
    client_message_id = StrictCharField(max_length=100, required=False, allow_null=True, default=None)

    def validate_content(self, value):
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value


class MessageListQuerySerializer(serializers.Serializer):
    after_seq = serializers.IntegerField(min_value=0, max_value=MAX_ID, required=False)


class ConversationListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Conversation.Status.choices, required=False)
    channel = serializers.ChoiceField(choices=Conversation.Channel.choices, required=False)
    search = serializers.CharField(max_length=200, required=False)


class ExportQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=["json", "markdown"], default="json")
