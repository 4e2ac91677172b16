"""The ``openai`` provider: the official client, chat completions with tools, streamed.

Works against OpenAI or any compatible server (``OPENAI_BASE_URL``). Every failure of the
server or the network becomes a ``ProviderError``; 4xx other than 408/409/429 are not
transient (retrying the same request cannot help).
"""

import json

import openai

from ..types import DeltaCallback, ProviderError, ProviderResponse, ToolCallRequest, Usage


class OpenAIProvider:
    name = "openai"

    def __init__(self, *, api_key: str, base_url: str | None, model: str, timeout: float):
        self.model = model
        # Retries belong to the Celery task (with backoff), not to a request a user waits on.
        self.client = openai.OpenAI(api_key=api_key or "unset", base_url=base_url, timeout=timeout, max_retries=0)

    def complete(
        self, *, messages: list[dict], tools: list[dict], on_delta: DeltaCallback | None = None
    ) -> ProviderResponse:
        kwargs = {"model": self.model, "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
        if tools:
            kwargs["tools"] = tools
        try:
            # Closed on the way out too when the listener goes away mid-answer.
            with self.client.chat.completions.create(**kwargs) as stream:
                return self._collect(stream, on_delta)
        except openai.APIStatusError as exc:
            transient = exc.status_code >= 500 or exc.status_code in (408, 409, 429)
            raise ProviderError(f"model server answered {exc.status_code}", transient=transient) from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise ProviderError(f"model server unreachable: {type(exc).__name__}") from exc
        except openai.OpenAIError as exc:
            raise ProviderError(f"model error: {exc}") from exc
        except ValueError as exc:  # a chunk that is not JSON: the server, not us, is broken
            raise ProviderError(f"model server sent a malformed response: {type(exc).__name__}") from exc

    def _collect(self, stream, on_delta: DeltaCallback | None) -> ProviderResponse:
        content: list[str] = []
        calls: dict[int, dict] = {}
        usage = Usage()
        for chunk in stream:
            if chunk.usage:
                usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
            for choice in chunk.choices:
                delta = choice.delta
                if delta.content:
                    content.append(delta.content)
                    if on_delta is not None:
                        on_delta(delta.content)
                for part in delta.tool_calls or []:
                    call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = part.id or call["id"]
                    if part.function:
                        call["name"] += part.function.name or ""
                        call["arguments"] += part.function.arguments or ""
        tool_calls = []
        for index in sorted(calls):
            call = calls[index]
            try:
                arguments = json.loads(call["arguments"] or "{}")
            except json.JSONDecodeError:
                arguments = {"_unparsed": call["arguments"]}
            tool_calls.append(ToolCallRequest(id=call["id"] or f"call_{index}", name=call["name"], arguments=arguments))
        return ProviderResponse(content="".join(content), tool_calls=tool_calls, usage=usage)
