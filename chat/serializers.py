import functools

from rest_framework import serializers

from config.api.fields import ObjectIdField, StrictCharField
from conversations.models import MAX_MESSAGE_CHARS
from conversations.serializers import MessageSerializer

from .models import AgentRun, Task


class ChatRequestSerializer(serializers.Serializer):
    message = StrictCharField(max_length=MAX_MESSAGE_CHARS, trim_whitespace=False)
    # The legacy contract says a positive integer: 0 and -1 are a client bug (400), not "not found".
    conversation_id = ObjectIdField(required=False, allow_null=True, default=None)

    def validate_message(self, value):
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value


class ToolCallSerializer(serializers.Serializer):
    name = serializers.CharField()
    arguments = serializers.JSONField()
    result = serializers.JSONField()


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class ChatResponseSerializer(serializers.Serializer):
    conversation_id = serializers.IntegerField()
    message_id = serializers.IntegerField()
    reply_id = serializers.IntegerField()
    run_id = serializers.IntegerField()
    response = serializers.CharField()
    tool_calls = ToolCallSerializer(many=True)
    usage = UsageSerializer()


class LegacyChatResponseSerializer(ChatResponseSerializer):
    tool_calls = serializers.ListField(child=serializers.CharField())


class AgentRunSerializer(serializers.ModelSerializer):
    conversation_id = serializers.IntegerField(read_only=True)
    trigger_message_id = serializers.IntegerField(read_only=True)
    reply_message_id = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = AgentRun
        fields = [
            "id",
            "conversation_id",
            "trigger_message_id",
            "reply_message_id",
            "provider",
            "model",
            "status",
            "tool_calls",
            "usage",
            "latency_ms",
            "error",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


@functools.cache
def _run_renderer() -> AgentRunSerializer:
    # Built once, as conversations.serializers.message_data's renderer: the same fields.
    return AgentRunSerializer()


def run_data(run: AgentRun) -> dict:
    """A run as the REST API renders it (``AgentRunSerializer(run).data``), without
    building the serializer's fields again for each run."""
    return dict(_run_renderer().to_representation(run))


class MessageAcceptedSerializer(serializers.Serializer):
    message = MessageSerializer()
    run = AgentRunSerializer()


class TaskSerializer(serializers.ModelSerializer):
    class Meta:
        model = Task
        fields = ["id", "title", "completed", "created_at", "updated_at", "completed_at"]
        read_only_fields = ["id", "created_at", "updated_at", "completed_at"]


class TaskWriteSerializer(serializers.Serializer):
    title = StrictCharField(max_length=500, required=False)
    completed = serializers.BooleanField(required=False)

    def validate(self, attrs):
        # PUT replaces the task, so it needs a title; POST too. PATCH (partial) may omit it.
        if not self.partial and "title" not in attrs:
            raise serializers.ValidationError({"title": ["This field is required."]})
        return attrs


class TaskListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["all", "pending", "completed"], default="all")
