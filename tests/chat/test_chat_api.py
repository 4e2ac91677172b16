import dataclasses

import pytest

from accounts.models import User
from chat.agent import tools
from chat.models import AgentRun, Task
from conversations.models import Conversation, Message
from tests.accounts.factories import TenantFactory, UserFactory
from tests.helpers import assert_error, client_for

pytestmark = pytest.mark.django_db


def chat(client, message, conversation_id=None, path="/api/v1/chat"):
    body = {"message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    return client.post(path, body, format="json")


def test_add_a_task_returns_reply_tool_call_and_task_row(auth_api, user):
    response = chat(auth_api, "Add a task to buy milk")

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"conversation_id", "message_id", "reply_id", "run_id", "response", "tool_calls", "usage"}
    assert [call["name"] for call in body["tool_calls"]] == ["add_task"]
    assert body["tool_calls"][0]["arguments"] == {"title": "buy milk"}
    assert body["tool_calls"][0]["result"]["task"]["title"] == "buy milk"
    assert "buy milk" in body["response"]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0
    task = Task.objects.get()
    assert (task.owner_id, task.title, task.completed) == (user.id, "buy milk", False)
    run = AgentRun.objects.get(pk=body["run_id"])
    assert (run.status, run.provider, run.reply_message_id) == ("completed", "local", body["reply_id"])
    assert run.latency_ms is not None and run.tool_calls == body["tool_calls"]


def test_follow_up_in_same_conversation_lists_the_task_and_keeps_history(auth_api):
    first = chat(auth_api, "Add a task to buy milk").json()

    second = chat(auth_api, "what are my tasks?", conversation_id=first["conversation_id"])

    assert second.status_code == 200, second.content
    body = second.json()
    assert body["conversation_id"] == first["conversation_id"]
    assert [c["name"] for c in body["tool_calls"]] == ["list_tasks"]
    assert "buy milk" in body["response"]
    messages = Message.objects.filter(conversation_id=first["conversation_id"]).order_by("seq")
    assert [(m.seq, m.role) for m in messages] == [(1, "user"), (2, "assistant"), (3, "user"), (4, "assistant")]


def test_complete_rename_and_delete_through_chat(auth_api, user):
    conversation_id = chat(auth_api, "add a task to buy milk").json()["conversation_id"]

    done = chat(auth_api, "mark buy milk done", conversation_id).json()
    renamed = chat(auth_api, "rename buy milk to buy oat milk", conversation_id).json()
    pending = chat(auth_api, "show pending tasks", conversation_id).json()
    deleted = chat(auth_api, "delete buy oat milk", conversation_id).json()

    assert done["tool_calls"][0]["name"] == "complete_task"
    assert renamed["tool_calls"][0]["result"]["task"] == {
        "id": renamed["tool_calls"][0]["result"]["task"]["id"],
        "title": "buy oat milk",
        "completed": True,
    }
    assert pending["tool_calls"][0]["result"]["count"] == 0
    assert deleted["tool_calls"][0]["name"] == "delete_task"
    assert not Task.objects.filter(owner=user).exists()


def test_unknown_task_is_answered_not_an_error(auth_api):
    response = chat(auth_api, "mark walk the dog done")

    assert response.status_code == 200
    assert response.json()["tool_calls"][0]["result"]["error"] == "not_found"
    assert "couldn't find" in response.json()["response"]


def test_greeting_answers_without_tools(auth_api):
    body = chat(auth_api, "hello there").json()

    assert body["tool_calls"] == []
    assert body["response"].startswith("Hello")


def test_tools_only_touch_the_callers_own_tasks(auth_api, user):
    colleague = UserFactory(tenant=user.tenant)
    Task.objects.create(tenant=user.tenant, owner=colleague, title="secret plan")

    body = chat(auth_api, "what are my tasks?").json()
    deleted = chat(auth_api, "delete secret plan").json()

    assert body["tool_calls"][0]["result"]["count"] == 0
    assert deleted["tool_calls"][0]["result"]["error"] == "not_found"
    assert Task.objects.filter(owner=colleague).count() == 1


@pytest.mark.parametrize("message", ["", "   ", "x" * 10_001])
def test_empty_or_too_long_message_is_400_and_stores_nothing(auth_api, message):
    response = chat(auth_api, message)

    error = assert_error(response, 400, "validation_error")
    assert "message" in error["details"]
    assert Message.objects.count() == 0 and Conversation.objects.count() == 0


def test_message_of_exactly_10000_chars_is_accepted(auth_api):
    assert chat(auth_api, "x" * 10_000).status_code == 200


def test_unknown_conversation_is_404(auth_api):
    assert_error(chat(auth_api, "hi", conversation_id=999999), 404, "not_found")
    assert Message.objects.count() == 0


def test_other_tenants_conversation_is_404_and_untouched(auth_api):
    stranger = UserFactory(tenant=TenantFactory())
    theirs = chat(client_for(stranger), "hello").json()["conversation_id"]

    response = chat(auth_api, "hello", conversation_id=theirs)

    assert_error(response, 404, "not_found")
    assert Message.objects.filter(conversation_id=theirs).count() == 2


def test_same_tenant_non_participant_conversation_is_404(auth_api, user):
    colleague = UserFactory(tenant=user.tenant)
    theirs = chat(client_for(colleague), "hello").json()["conversation_id"]

    assert_error(chat(auth_api, "hello", conversation_id=theirs), 404, "not_found")


def test_chat_requires_authentication(api):
    assert_error(chat(api, "hello"), 401, "not_authenticated")


def test_legacy_path_returns_tool_names(auth_api, user):
    response = chat(auth_api, "add a task to call mom", path=f"/api/{user.id}/chat")

    assert response.status_code == 200, response.content
    assert response.json()["tool_calls"] == ["add_task"]
    assert Task.objects.get().title == "call mom"


def test_legacy_path_with_trailing_slash(auth_api, user):
    assert chat(auth_api, "hello", path=f"/api/{user.id}/chat/").status_code == 200


def test_legacy_path_for_another_user_is_403(auth_api, user):
    other = UserFactory(tenant=user.tenant)

    response = chat(auth_api, "add a task to x", path=f"/api/{other.id}/chat")

    assert_error(response, 403, "permission_denied")
    assert Task.objects.count() == 0 and Message.objects.count() == 0


def test_history_is_fed_to_the_model_within_budget(auth_api, settings, fake_openai):
    settings.AGENT_HISTORY_CHARS = 25
    fake_openai.reply("first answer")
    fake_openai.reply("second answer")
    fake_openai.reply("third answer")
    cid = chat(auth_api, "one " * 10).json()["conversation_id"]
    chat(auth_api, "two", cid)

    chat(auth_api, "three", cid)

    sent = fake_openai.requests[-1]["body"]["messages"]
    assert sent[0]["role"] == "system"
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "two"),
        ("assistant", "second answer"),
        ("user", "three"),
    ]
    assert User.objects.count() == 1


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"title": 5}, "title must be a non-empty string."),
        ({"title": "   "}, "title must be a non-empty string."),
        ({"task_id": "first"}, "task_id must be an integer."),
        ({"task_id": True}, "task_id must be an integer."),
        ({}, "Give task_id or title."),
    ],
)
def test_tool_call_with_bad_arguments_is_reported_back_and_the_turn_completes(
    auth_api, user, fake_openai, arguments, expected
):
    Task.objects.create(tenant=user.tenant, owner=user, title="5")
    fake_openai.call_tool("complete_task", arguments)
    fake_openai.reply("I could not tell which task you meant.")

    response = chat(auth_api, "finish task 5")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["tool_calls"][0]["result"] == {"error": "invalid_arguments", "message": expected}
    assert body["response"] == "I could not tell which task you meant."
    assert AgentRun.objects.get(pk=body["run_id"]).status == "completed"
    assert Task.objects.get(owner=user).completed is False
    tool_message = fake_openai.requests[1]["body"]["messages"][-1]
    assert tool_message["role"] == "tool" and "invalid_arguments" in tool_message["content"]


def test_tool_call_with_a_numeric_string_task_id_works(auth_api, user, fake_openai):
    task = Task.objects.create(tenant=user.tenant, owner=user, title="water plants")
    fake_openai.call_tool("complete_task", {"task_id": str(task.id)})
    fake_openai.reply("Done.")

    body = chat(auth_api, "done with the plants").json()

    assert body["tool_calls"][0]["result"]["task"] == {"id": task.id, "title": "water plants", "completed": True}


def test_a_tool_that_fails_unexpectedly_is_logged_and_reported_not_raised(
    auth_api, user, fake_openai, monkeypatch, caplog
):
    # The one place we break our own code on purpose: a tool with a bug.
    def broken(user, **arguments):
        raise KeyError("bug")

    monkeypatch.setitem(tools.TOOLS, "list_tasks", dataclasses.replace(tools.TOOLS["list_tasks"], handler=broken))
    fake_openai.call_tool("list_tasks", {})
    fake_openai.reply("Something went wrong on my side.")

    response = chat(auth_api, "what is on my list?")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["tool_calls"][0]["result"] == {"error": "tool_failed", "message": "The tool failed."}
    assert AgentRun.objects.get(pk=body["run_id"]).status == "completed"
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records if r.name == "chat.agent.tools")
