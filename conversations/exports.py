"""A conversation as a download (``GET .../export?format=json|markdown``).

Both formats are built from the one message renderer (``serializers.message_data``), so an
export shows a message exactly as REST and the live events do.
"""

import json

from .models import Conversation
from .serializers import ConversationSerializer, message_data


def conversation_document(*, conversation: Conversation, messages) -> dict:
    """The conversation and its messages as one JSON-ready document (what every JSON
    export holds)."""
    return {
        "conversation": ConversationSerializer(conversation).data,
        "messages": [message_data(message) for message in messages],
    }


def conversation_json(*, conversation: Conversation, messages) -> str:
    return json.dumps(conversation_document(conversation=conversation, messages=messages), indent=2, default=str)


def conversation_jsonl_line(*, conversation: Conversation, messages) -> str:
    """One conversation as one line of JSON Lines (many conversations in one file)."""
    document = conversation_document(conversation=conversation, messages=messages)
    return json.dumps(document, ensure_ascii=False, default=str) + "\n"


def conversation_markdown(*, conversation: Conversation, messages) -> str:
    """A readable transcript: title, then each message with its seq, role and time."""
    lines = [f"# {conversation.title or f'Conversation {conversation.pk}'}", ""]
    lines.append(f"- id: {conversation.pk}  \n- channel: {conversation.channel}  \n- status: {conversation.status}")
    lines.append("")
    for message in map(message_data, messages):
        lines.append(f"### {message['seq']}. {message['role'].capitalize()} · {message['created_at']}")
        lines.append("")
        lines.append(message["content"])
        for attachment in message["attachments"]:
            lines.append("")
            lines.append(
                f"> attachment [{attachment.get('name')}]({attachment.get('download_path')}) "
                f"({attachment.get('content_type')}, {attachment.get('size')} bytes)"
            )
        for call in message["tool_calls"]:
            lines.append("")
            lines.append(f"> tool `{call.get('name')}` {json.dumps(call.get('arguments'), ensure_ascii=False)}")
        lines.append("")
    return "\n".join(lines)
