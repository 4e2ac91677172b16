"""The hub's request and response shapes; validation only."""

from rest_framework import serializers

from config.api.fields import ObjectIdField, StrictCharField
from conversations.models import MAX_MESSAGE_CHARS
from conversations.serializers import MAX_ATTACHMENTS, MessageSerializer

from .models import ChannelAccount, DeliveryAttempt, MessageStatusChange
from .services.broadcast import MAX_TARGETS


class ChannelAccountSerializer(serializers.ModelSerializer):
    """An account as the API shows it: never its secret."""

    class Meta:
        model = ChannelAccount
        fields = ["id", "channel", "name", "external_id", "settings", "created_at", "updated_at"]
        read_only_fields = fields


class ChannelAccountCreatedSerializer(ChannelAccountSerializer):
    """The answer to a create, the one time the secret is shown."""

    secret = serializers.CharField(read_only=True)

    class Meta(ChannelAccountSerializer.Meta):
        fields = [*ChannelAccountSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class ChannelAccountCreateSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=ChannelAccount.Channel.choices)
    name = StrictCharField(max_length=200)
    external_id = StrictCharField(max_length=100)
    settings = serializers.JSONField(required=False, default=dict)


class ChannelAccountUpdateSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200, required=False)
    settings = serializers.JSONField(required=False)


class ContactSerializer(serializers.Serializer):
    address = StrictCharField(max_length=100)
    name = StrictCharField(max_length=200, required=False, allow_blank=True, default="")


class BindConversationSerializer(serializers.Serializer):
    """``POST /conversations/`` for a conversation bound to a contact on an account."""

    channel_account_id = ObjectIdField()
    contact = ContactSerializer()


class BroadcastTargetSerializer(serializers.Serializer):
    channel_account_id = ObjectIdField()
    address = StrictCharField(max_length=100)


class BroadcastSerializer(serializers.Serializer):
    content = StrictCharField(max_length=MAX_MESSAGE_CHARS, trim_whitespace=False)
    targets = BroadcastTargetSerializer(many=True, allow_empty=False, max_length=MAX_TARGETS)
    # Ids of ready files of the caller's tenant, as on POST /conversations/{id}/messages;
    # every target's message carries them.
    attachments = serializers.ListField(
        child=serializers.UUIDField(), required=False, default=list, max_length=MAX_ATTACHMENTS
    )

    def validate_content(self, value):
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value

    def validate_targets(self, value):
        keys = [(t["channel_account_id"], t["address"]) for t in value]
        if len(set(keys)) != len(keys):
            raise serializers.ValidationError("Each target may appear once.")
        return value


class BroadcastItemSerializer(serializers.Serializer):
    channel_account_id = serializers.IntegerField()
    address = serializers.CharField()
    conversation_id = serializers.IntegerField()
    message_id = serializers.IntegerField(source="message.pk")
    status = serializers.CharField(source="message.status")


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ["attempt", "connector", "outcome", "error", "latency_ms", "at"]
        read_only_fields = fields


class StatusChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = MessageStatusChange
        fields = ["status", "at"]
        read_only_fields = fields


class MessageDeliveryDetailSerializer(MessageSerializer):
    """A message with its status history and every delivery attempt (``deliveries``);
    the view sets both lists on the message from one selector."""

    status_history = StatusChangeSerializer(many=True, read_only=True)
    deliveries = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta(MessageSerializer.Meta):
        fields = [*MessageSerializer.Meta.fields, "status_history", "deliveries"]
        read_only_fields = fields
