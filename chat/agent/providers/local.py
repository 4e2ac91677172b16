"""The offline default: a deterministic task assistant.

It behaves like a remote model in the tool loop: given the conversation it either asks
for tool calls or, once the tool results are in, writes the answer, streaming it word by
word. It understands requests about the user's to-do list, greetings and help.
"""

import json
import re
import uuid

from ..types import DeltaCallback, ProviderResponse, ToolCallRequest, Usage

# Possessive (``*+``, Python 3.11): the articles are taken once and never given back. A
# plain ``*`` before the lazy ``.+?`` of a reference let the engine try every split of
# "a a a ... a" against every end of the reference: quadratic, seconds of CPU per message.
_ARTICLE = r"(?:(?:a|an|the|new|my)\s+)*+"
_TASKWORD = r"(?:tasks?|to-?dos?|items?|reminders?)"
_LIST_SUFFIX = r"(?:\s+(?:to|on|onto)\s+(?:my\s+)?(?:tasks?|to-?do(?:\s+list)?|list))?"

PATTERNS: list[tuple[str, re.Pattern]] = [
    (
        "rename",
        re.compile(
            rf"^(?:rename|change|update)\s+{_ARTICLE}(?:{_TASKWORD}\s+)?(?P<ref>.+?)\s+(?:to|into|as)\s+(?P<new>.+)$",
            re.I,
        ),
    ),
    (
        "complete",
        re.compile(
            rf"^(?:mark|set)\s+{_ARTICLE}(?:{_TASKWORD}\s+)?(?P<ref>.+?)\s+(?:as\s+)?(?:done|complete|completed|finished)$",
            re.I,
        ),
    ),
    (
        "complete",
        re.compile(
            rf"^(?:complete|finish|check\s+off|tick\s+off|i\s+(?:have\s+)?(?:finished|did|done))\s+{_ARTICLE}(?:{_TASKWORD}\s+)?(?P<ref>.+)$",
            re.I,
        ),
    ),
    (
        "delete",
        re.compile(
            rf"^(?:delete|remove|drop|cancel)\s+{_ARTICLE}(?:{_TASKWORD}\s+)?(?P<ref>.+?)(?:\s+from\s+(?:my\s+)?(?:tasks?|list|to-?do(?:\s+list)?))?$",
            re.I,
        ),
    ),
    (
        "list",
        re.compile(
            rf"^(?:what\s+(?:are|is)\s+(?:on\s+)?my\s+(?:{_TASKWORD}|list|to-?do\s+list)|(?:show|list|display|give)\s+(?:me\s+)?(?:all\s+)?(?:of\s+)?{_ARTICLE}(?:pending\s+|open\s+|completed\s+|done\s+)?(?:{_TASKWORD}|list|to-?do\s+list)|what(?:'s|\s+is)\s+on\s+my\s+(?:list|to-?do\s+list)|(?:my\s+)?{_TASKWORD}\??|what\s+do\s+i\s+(?:have|need)\s+to\s+do)",
            re.I,
        ),
    ),
    (
        "add",
        re.compile(
            rf"^(?:add|create|new|put)\s+{_ARTICLE}(?:{_TASKWORD}\s*)?(?:to\s+|called\s+|named\s+|:\s*)?(?P<title>.+?){_LIST_SUFFIX}$",
            re.I,
        ),
    ),
    (
        "add",
        re.compile(
            r"^(?:remind\s+me\s+to|i\s+need\s+to|i\s+have\s+to|don'?t\s+let\s+me\s+forget\s+to)\s+(?P<title>.+)$", re.I
        ),
    ),
    ("greet", re.compile(r"^(?:hi|hello|hey|hiya|howdy|good\s+(?:morning|afternoon|evening))\b", re.I)),
    ("help", re.compile(r"^(?:help|what\s+can\s+you\s+do|how\s+does\s+this\s+work|\?)", re.I)),
    ("thanks", re.compile(r"^(?:thanks|thank\s+you|cheers|great|perfect)\b", re.I)),
]

HELP = (
    'I can manage your to-do list. Try: "add a task to buy milk", "what are my tasks?", '
    '"mark buy milk done", "rename buy milk to buy oat milk" or "delete buy milk".'
)


def _clean(text: str) -> str:
    return text.strip().strip("\"'“”‘’").strip().rstrip(".!?").strip()


def _ref_arguments(ref: str) -> dict:
    ref = _clean(ref)
    number = re.fullmatch(r"#?(\d+)", ref)
    return {"task_id": int(number.group(1))} if number else {"title": ref}


def understand(text: str) -> tuple[str, dict]:
    """(intent, tool arguments) for one user message."""
    text = " ".join(text.split())
    sentence = text.rstrip(".!")
    sentence = re.sub(r"^(?:please|can\s+you|could\s+you|would\s+you)\s+", "", sentence, flags=re.I)
    sentence = re.sub(r"\s+please$", "", sentence, flags=re.I)
    for intent, pattern in PATTERNS:
        match = pattern.match(sentence)
        if not match:
            continue
        groups = match.groupdict()
        if intent == "add":
            title = _clean(groups["title"])
            if title:
                return "add", {"title": title}
        elif intent == "list":
            lowered = sentence.lower()
            status = "completed" if re.search(r"\b(completed|done)\b", lowered) else "all"
            status = "pending" if re.search(r"\b(pending|open)\b", lowered) else status
            return "list", {"status": status}
        elif intent in ("complete", "delete"):
            return intent, _ref_arguments(groups["ref"])
        elif intent == "rename":
            return "rename", {**_ref_arguments(groups["ref"]), "new_title": _clean(groups["new"])}
        else:
            return intent, {}
    return "other", {}


TOOL_FOR_INTENT = {
    "add": "add_task",
    "list": "list_tasks",
    "complete": "complete_task",
    "delete": "delete_task",
    "rename": "update_task",
}


def _quote(title: str) -> str:
    return f"“{title}”"


def describe_result(name: str, result: dict) -> str:
    """The answer after a tool ran, in plain words."""
    if "error" in result:
        if result["error"] == "not_found":
            return f'I couldn\'t find that task. {result.get("message", "")} Ask "what are my tasks?" to see them.'
        return f"That didn't work: {result.get('message', result['error'])}"
    if name == "add_task":
        return f"Added {_quote(result['task']['title'])} to your tasks."
    if name == "list_tasks":
        tasks = result["tasks"]
        kind = {"pending": " pending", "completed": " completed"}.get(result.get("status"), "")
        if not tasks:
            return (
                f"You have no{kind} tasks." if kind else 'You have no tasks yet. Say "add a task to ..." to make one.'
            )
        lines = [f"{i}. {'[x]' if t['completed'] else '[ ]'} {t['title']}" for i, t in enumerate(tasks, 1)]
        noun = "task" if len(tasks) == 1 else "tasks"
        return f"You have {len(tasks)}{kind} {noun}:\n" + "\n".join(lines)
    if name == "complete_task":
        return f"Marked {_quote(result['task']['title'])} as done."
    if name == "update_task":
        return f"Updated the task: it is now {_quote(result['task']['title'])}."
    if name == "delete_task":
        return f"Deleted {_quote(result['deleted']['title'])}."
    return "Done."


def _tokens(text: str) -> int:
    return max(1, len(re.findall(r"\w+|[^\w\s]", text)))


class LocalProvider:
    name = "local"
    model = "local-task-assistant"
    # Answers in this process, in microseconds, without network: a turn may run its tool
    # calls and store its reply in one transaction (chat.services.runs).
    in_process = True

    def complete(
        self, *, messages: list[dict], tools: list[dict], on_delta: DeltaCallback | None = None
    ) -> ProviderResponse:
        prompt_tokens = sum(_tokens(str(m.get("content") or "")) for m in messages)
        last = messages[-1] if messages else {"role": "user", "content": ""}
        if last["role"] == "tool":
            content = self._after_tools(messages)
            return self._answer(content, prompt_tokens, on_delta)

        intent, arguments = understand(str(last.get("content") or ""))
        tool_names = {t["function"]["name"] for t in tools}
        tool = TOOL_FOR_INTENT.get(intent)
        if tool and tool in tool_names:
            call = ToolCallRequest(id=f"call_{uuid.uuid4().hex[:12]}", name=tool, arguments=arguments)
            return ProviderResponse(
                content="", tool_calls=[call], usage=Usage(prompt_tokens, _tokens(json.dumps(arguments)))
            )
        return self._answer(self._reply(intent), prompt_tokens, on_delta)

    def _after_tools(self, messages: list[dict]) -> str:
        # The tool results since the assistant's last tool-call message, in order.
        names = {}
        parts = []
        for message in messages:
            if message["role"] == "assistant":
                for call in message.get("tool_calls") or []:
                    names[call["id"]] = call["function"]["name"]
        tail = []
        for message in reversed(messages):
            if message["role"] != "tool":
                break
            tail.append(message)
        for message in reversed(tail):
            result = json.loads(message["content"])
            parts.append(describe_result(names.get(message.get("tool_call_id"), ""), result))
        return "\n".join(parts)

    def _reply(self, intent: str) -> str:
        if intent == "greet":
            return "Hello! I'm your task assistant. " + HELP
        if intent == "thanks":
            return "You're welcome! Anything else for your to-do list?"
        if intent == "help":
            return HELP
        return "I'm a task assistant, so I can't help with that, but I can manage your to-do list. " + HELP

    def _answer(self, content: str, prompt_tokens: int, on_delta: DeltaCallback | None) -> ProviderResponse:
        if on_delta is not None:
            for piece in re.findall(r"\S+\s*|\s+", content):
                on_delta(piece)
        return ProviderResponse(content=content, usage=Usage(prompt_tokens, _tokens(content)))
