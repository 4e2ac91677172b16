"""Providers turn a list of chat messages (OpenAI format) into the model's next step."""

from django.conf import settings

from .local import LocalProvider


def get_provider():
    """The configured provider: ``openai`` when AGENT_PROVIDER says so (the default when
    OPENAI_API_KEY is set), else the offline ``local`` task assistant."""
    if settings.AGENT_PROVIDER == "openai":
        from .openai import OpenAIProvider

        return OpenAIProvider(
            api_key=settings.OPENAI_API_KEY,
            base_url=settings.OPENAI_BASE_URL or None,
            model=settings.OPENAI_MODEL,
            timeout=settings.OPENAI_TIMEOUT,
        )
    return LocalProvider()
