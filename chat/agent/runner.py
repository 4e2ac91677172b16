"""The tool loop, the same for every provider."""

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from .tools import tool_execute, tool_schemas
from .types import Usage

SYSTEM_PROMPT = (
    "You are a helpful assistant that manages the user's to-do list with the tools you are given. "
    "Use a tool whenever the user asks about their tasks; answer briefly and plainly."
)

# Emits one event: (type, data).
Emit = Callable[[str, dict], None]


@dataclass
class AgentResult:
    content: str
    tool_calls: list[dict] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


def run_agent(*, provider, user, history: list[dict], emit: Emit, max_rounds: int) -> AgentResult:
    """Asks the provider, runs the tools it calls, and repeats until it answers in words
    (at most ``max_rounds`` tool rounds; then it must answer without tools).

    ``emit`` receives ``message.delta``, ``tool.call`` and ``tool.result`` as they happen.
    Raises ``ProviderError`` when the model cannot answer.
    """
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, *history]
    schemas = tool_schemas()
    result = AgentResult(content="")

    def on_delta(text: str) -> None:
        emit("message.delta", {"delta": text})

    for _ in range(max_rounds):
        response = provider.complete(messages=messages, tools=schemas, on_delta=on_delta)
        result.usage.add(response.usage)
        if not response.tool_calls:
            result.content = response.content
            return result
        messages.append(
            {
                "role": "assistant",
                "content": response.content or None,
                "tool_calls": [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                    for c in response.tool_calls
                ],
            }
        )
        for call in response.tool_calls:
            emit("tool.call", {"id": call.id, "name": call.name, "arguments": call.arguments})
            output = tool_execute(user=user, name=call.name, arguments=call.arguments)
            emit("tool.result", {"id": call.id, "name": call.name, "result": output})
            result.tool_calls.append({"name": call.name, "arguments": call.arguments, "result": output})
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(output)})

    response = provider.complete(messages=messages, tools=[], on_delta=on_delta)
    result.usage.add(response.usage)
    result.content = response.content
    return result
