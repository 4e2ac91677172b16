"""Providers turn a list of chat messages (OpenAI format) into the model's next step."""

from functools import lru_cache

from django.conf import settings

from .local import LocalProvider


@lru_cache(maxsize=8)
def _openai_provider(api_key: str, base_url: str | None, model: str, timeout: float):
    from .openai import OpenAIProvider

    # One client per configuration and process: it keeps its HTTP connections.
    return OpenAIProvider(api_key=api_key, base_url=base_url, model=model, timeout=timeout)


def get_provider():
    """The configured provider: ``openai`` when AGENT_PROVIDER says so (the default when
    OPENAI_API_KEY is set), else the offline ``local`` task assistant."""
    if settings.AGENT_PROVIDER == "openai":
        return _openai_provider(
            settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL or None, settings.OPENAI_MODEL, settings.OPENAI_TIMEOUT
        )
    return LocalProvider()
