"""message_data and run_data render through serializer fields built once (perf, issue 11):
what they give must be exactly what a fresh serializer gives, for every shape of row."""

import json

from rest_framework.utils.encoders import JSONEncoder

from chat.models import AgentRun
from chat.serializers import AgentRunSerializer, run_data
from conversations.models import Message
from conversations.serializers import MessageSerializer, message_data
from tests.conversations.factories import ConversationFactory, add_messages


def test_message_data_is_what_a_fresh_serializer_renders(user):
    conversation = ConversationFactory(owner=user)
    add_messages(conversation, 2)
    add_messages(conversation, 1, role="assistant")
    Message.objects.filter(seq=2).update(client_message_id="c-1", tool_calls=[{"name": "add_task"}])
    messages = list(Message.objects.filter(conversation=conversation).order_by("seq"))
    Message.objects.filter(pk=messages[0].pk).update(sender=None)
    messages = list(Message.objects.filter(conversation=conversation).order_by("seq"))
    rendered = [message_data(m) for m in messages]
    assert rendered == [dict(MessageSerializer(m).data) for m in messages]
    assert rendered[0]["sender_id"] is None and rendered[1]["client_message_id"] == "c-1"
    assert rendered[2]["role"] == "assistant" and rendered[0]["created_at"].endswith("Z")


def test_the_202_body_is_the_serializers_output(auth_api, user):
    conversation = ConversationFactory(owner=user)
    response = auth_api.post(
        f"/api/v1/conversations/{conversation.id}/messages", {"content": "hi", "client_message_id": "k"}, format="json"
    )
    assert response.status_code == 202
    body = response.json()
    message = Message.objects.get(pk=body["message"]["id"])
    run = AgentRun.objects.get(pk=body["run"]["id"])
    assert body["message"] == _json(MessageSerializer(message).data)
    assert body["run"] == _json(AgentRunSerializer(run).data)
    assert run_data(run) == dict(AgentRunSerializer(run).data)
    assert body["message"]["content"] == "hi" and body["run"]["trigger_message_id"] == message.pk


def _json(data):
    return json.loads(json.dumps(data, cls=JSONEncoder))
