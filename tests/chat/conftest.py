import pytest

from tests.chat.fake_openai import FakeOpenAI


@pytest.fixture
def fake_openai(settings):
    """The openai provider pointed at a fake OpenAI-compatible server on 127.0.0.1."""
    server = FakeOpenAI().start()
    settings.AGENT_PROVIDER = "openai"
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = server.base_url
    settings.OPENAI_MODEL = "fake-model"
    settings.OPENAI_TIMEOUT = 2.0
    yield server
    server.stop()
