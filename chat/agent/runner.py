"""The tool loop, the same for every provider."""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

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


class DeltaCoalescer:
    """Joins streamed pieces of an answer into a few ``message.delta`` events.

    Every delta is a channel-layer send to every listener of the conversation: a 20-word
    answer streamed word by word to 500 listeners was 10,000 sends. The first piece goes
    out at once (the time to the first word is kept); later pieces are held until
    ``window`` seconds passed since the last flush or ``max_chars`` are held, and
    ``flush()`` sends the rest. The caller flushes before any other event (tool.call) and
    when the provider's answer ends, so events keep their order and the concatenated
    deltas are the answer. A flush happens when a piece arrives: a provider that pauses
    mid-answer holds at most what arrived within the last window until its next piece.
    """

    def __init__(self, emit: "Emit", *, window: float, max_chars: int, clock: Callable[[], float] = time.monotonic):
        self.emit = emit
        self.window = window
        self.max_chars = max_chars
        self.clock = clock
        self.pending: list[str] = []
        self.pending_chars = 0
        self.flushed_at: float | None = None

    def add(self, text: str) -> None:
        if not text:
            return
        self.pending.append(text)
        self.pending_chars += len(text)
        if (
            self.flushed_at is None
            or self.pending_chars >= self.max_chars
            or self.clock() - self.flushed_at >= self.window
        ):
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending, self.pending_chars = [], 0
        self.flushed_at = self.clock()
        self.emit("message.delta", {"delta": text})


def run_agent(*, provider, user, history: list[dict], emit: Emit, max_rounds: int) -> AgentResult:
    """Asks the provider, runs the tools it calls, and repeats until it answers in words
    (at most ``max_rounds`` tool rounds; then it must answer without tools).

    ``emit`` receives ``message.delta`` (coalesced: ``DeltaCoalescer``), ``tool.call`` and
    ``tool.result`` in the order they happen. Raises ``ProviderError`` when the model cannot answer.
    """
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, *history]
    schemas = tool_schemas()
    result = AgentResult(content="")

    deltas = DeltaCoalescer(
        emit, window=settings.REALTIME_DELTA_FLUSH_SECONDS, max_chars=settings.REALTIME_DELTA_FLUSH_CHARS
    )

    for _ in range(max_rounds):
        response = provider.complete(messages=messages, tools=schemas, on_delta=deltas.add)
        deltas.flush()  # before tool.call, and before the caller stores the reply
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

    response = provider.complete(messages=messages, tools=[], on_delta=deltas.add)
    deltas.flush()
    result.usage.add(response.usage)
    result.content = response.content
    return result
