import pytest

from chat.models import AgentRun, Task
from conversations.models import Message
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db


def test_plain_answer_through_the_real_openai_client(auth_api, fake_openai):
    fake_openai.reply("Hello from the model")

    response = auth_api.post("/api/v1/chat", {"message": "hi"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["response"] == "Hello from the model"
    assert body["tool_calls"] == []
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    request = fake_openai.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "fake-model"
    assert {t["function"]["name"] for t in request["body"]["tools"]} == {
        "add_task",
        "list_tasks",
        "complete_task",
        "update_task",
        "delete_task",
    }
    run = AgentRun.objects.get()
    assert (run.provider, run.model, run.status) == ("openai", "fake-model", "completed")


def test_tool_call_round_trip(auth_api, user, fake_openai):
    fake_openai.call_tool("add_task", {"title": "buy milk"}, call_id="call_abc")
    fake_openai.reply("Added buy milk.")

    response = auth_api.post("/api/v1/chat", {"message": "please remember milk"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["response"] == "Added buy milk."
    assert body["tool_calls"][0]["name"] == "add_task"
    assert body["tool_calls"][0]["arguments"] == {"title": "buy milk"}
    assert body["tool_calls"][0]["result"]["task"]["title"] == "buy milk"
    assert body["usage"]["total_tokens"] == 36  # two model calls
    assert Task.objects.get(owner=user).title == "buy milk"
    second = fake_openai.requests[1]["body"]["messages"]
    assert second[-2]["tool_calls"][0]["id"] == "call_abc"
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "call_abc"
    assert '"buy milk"' in second[-1]["content"]


def test_server_error_is_503_and_keeps_the_user_message(auth_api, fake_openai):
    fake_openai.fail(500)

    response = auth_api.post("/api/v1/chat", {"message": "hi"}, format="json")

    error = assert_error(response, 503, "agent_unavailable")
    message = Message.objects.get()
    assert (message.role, message.content) == ("user", "hi")
    assert error["details"]["message_id"] == message.id
    run = AgentRun.objects.get()
    assert run.status == "failed" and "500" in run.error and run.finished_at


def test_timeout_is_503_and_marks_the_run_failed(auth_api, settings, fake_openai):
    settings.OPENAI_TIMEOUT = 0.3
    fake_openai.hang(1.0)

    response = auth_api.post("/api/v1/chat", {"message": "hi"}, format="json")

    assert_error(response, 503, "agent_unavailable")
    assert Message.objects.filter(role="user").count() == 1
    assert AgentRun.objects.get().status == "failed"


def test_unknown_tool_from_the_model_is_reported_back_to_it(auth_api, fake_openai):
    fake_openai.call_tool("launch_rockets", {})
    fake_openai.reply("Sorry, I can't do that.")

    body = auth_api.post("/api/v1/chat", {"message": "go"}, format="json").json()

    assert body["tool_calls"][0]["result"]["error"] == "unknown_tool"
    assert body["response"] == "Sorry, I can't do that."


def test_malformed_stream_is_503_and_marks_the_run_failed(auth_api, fake_openai):
    fake_openai.garble()

    response = auth_api.post("/api/v1/chat", {"message": "hi"}, format="json")

    assert_error(response, 503, "agent_unavailable")
    run = AgentRun.objects.get()
    assert run.status == "failed" and "malformed" in run.error
    assert Message.objects.filter(role="user").count() == 1
