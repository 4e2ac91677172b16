"""The operator's manage.py commands, called as an operator would (``call_command``), on a
small data set: rows stored or removed, audit records written, and what they print."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import Tenant, User
from audits.models import AuditRecord
from chat.models import AgentRun, Task
from conversations.models import Conversation, Message
from tests.accounts.factories import TenantFactory, UserFactory
from tests.chat.conftest import fake_openai  # noqa: F401, F811 - the fixture
from tests.chat.factories import AgentRunFactory
from tests.conversations.factories import ConversationFactory, add_messages

pytestmark = pytest.mark.django_db

COMMANDS = [
    "create_tenant",
    "seed_demo",
    "purge_conversations",
    "export_conversations",
    "agent_check",
    "retry_failed_runs",
]


def run(*args, **options):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_explains_itself_with_help(name, capsys):
    with pytest.raises(SystemExit) as exited:
        call_command(name, "--help")

    assert exited.value.code == 0
    assert "usage:" in capsys.readouterr().out


# create_tenant


def test_create_tenant_makes_the_tenant_and_owner_and_prints_a_working_token():
    out, _ = run(
        "create_tenant", "--name", "Acme Corp", "--email", "Boss@Acme.example", "--password", "long-pass-phrase-9"
    )

    tenant = Tenant.objects.get(slug="acme-corp")
    owner = User.objects.get(email="boss@acme.example")
    assert (owner.tenant_id, owner.role, tenant.tier) == (tenant.pk, "owner", "free")
    assert owner.check_password("long-pass-phrase-9")
    access = next(line.split()[1] for line in out.splitlines() if line.startswith("access"))
    assert AccessToken(access)["user_id"] in (owner.pk, str(owner.pk))
    assert "created 1 tenant" in out
    assert set(AuditRecord.objects.filter(tenant=tenant).values_list("action", flat=True)) == {
        "tenant.created",
        "user.created",
    }


def test_create_tenant_generates_a_password_and_takes_a_tier():
    out, _ = run("create_tenant", "--name", "Big", "--email", "big@example.com", "--tier", "enterprise")

    password = next(line.split()[1] for line in out.splitlines() if line.startswith("password"))
    assert User.objects.get(email="big@example.com").check_password(password)
    assert Tenant.objects.get(slug="big").tier == "enterprise"


def test_create_tenant_refuses_a_taken_email_and_a_weak_password_creating_nothing():
    UserFactory(email="taken@example.com")
    tenants = Tenant.objects.count()

    with pytest.raises(CommandError, match="already exists"):
        run("create_tenant", "--name", "X", "--email", "taken@example.com", "--password", "long-pass-phrase-9")
    with pytest.raises(CommandError, match="too weak"):
        run("create_tenant", "--name", "Y", "--email", "y@example.com", "--password", "123")

    assert Tenant.objects.count() == tenants


# seed_demo


def test_seed_demo_creates_a_demo_once():
    first, _ = run("seed_demo")
    counts = (Tenant.objects.count(), User.objects.count(), Conversation.objects.count(), Message.objects.count())
    second, _ = run("seed_demo")

    owner = User.objects.get(email="owner@demo.example")
    assert owner.check_password("try-the-demo-chat-1")
    assert Conversation.objects.filter(owner=owner).count() == 3
    assert Task.objects.filter(owner=owner, title="buy milk").exists()
    groceries = Conversation.objects.get(owner=owner, title="Groceries")
    assert list(groceries.messages.values_list("seq", flat=True)) == list(range(1, 9))
    assert any(m.tool_calls for m in groceries.messages.filter(role="assistant"))
    assert "created 1 tenants, 2 users, 3 conversations" in first
    assert "created nothing" in second
    assert counts == (
        Tenant.objects.count(),
        User.objects.count(),
        Conversation.objects.count(),
        Message.objects.count(),
    )


# purge_conversations


@pytest.fixture
def aged(db):
    """Two old conversations of one tenant, one old of another, one recent."""
    old = timezone.now() - timedelta(days=40)
    tenant = TenantFactory(slug="acme")
    owner = UserFactory(tenant=tenant)
    conversations = {
        "old_a": ConversationFactory(owner=owner),
        "old_b": ConversationFactory(owner=owner),
        "old_other": ConversationFactory(),
        "recent": ConversationFactory(owner=owner),
    }
    for conversation in conversations.values():
        add_messages(conversation, 2)
    AgentRunFactory(conversation=conversations["old_a"])
    Conversation.objects.filter(pk__in=[c.pk for k, c in conversations.items() if k != "recent"]).update(updated_at=old)
    return conversations


def test_purge_dry_run_deletes_nothing(aged):
    messages = Message.objects.count()

    out, _ = run("purge_conversations", "--older-than", "30", "--dry-run")

    assert "would delete 3 conversation(s) with 7 message(s)" in out and "nothing deleted" in out
    assert Conversation.objects.count() == 4 and Message.objects.count() == messages
    assert not AuditRecord.objects.filter(action="conversation.purged").exists()


def test_purge_deletes_inactive_conversations_with_their_messages_and_runs_and_audits(aged):
    out, err = run("purge_conversations", "--older-than", "30", "--batch-size", "1")

    assert set(Conversation.objects.values_list("pk", flat=True)) == {aged["recent"].pk}
    assert Message.objects.count() == 2 and AgentRun.objects.count() == 0
    records = AuditRecord.objects.filter(action="conversation.purged")
    purged = sorted(pk for r in records for pk in r.details["conversation_ids"])
    assert purged == sorted(aged[k].pk for k in ("old_a", "old_b", "old_other"))
    assert {r.tenant_id for r in records} == {aged["old_a"].tenant_id, aged["old_other"].tenant_id}
    assert all(r.actor_id is None and r.details["older_than_days"] == 30 for r in records)
    assert "deleted 3 conversation(s)" in out
    assert "purging conversations: 3/3 (100%)" in err  # progress, on stderr


def test_purge_of_one_tenant_leaves_the_others(aged):
    run("purge_conversations", "--older-than", "30", "--tenant", "acme")

    assert set(Conversation.objects.values_list("pk", flat=True)) == {aged["recent"].pk, aged["old_other"].pk}


def test_purge_refuses_bad_options(aged):
    with pytest.raises(CommandError, match="at least 1 day"):
        run("purge_conversations", "--older-than", "0")
    with pytest.raises(CommandError, match="No tenant"):
        run("purge_conversations", "--older-than", "30", "--tenant", "nope")
    assert Conversation.objects.count() == 4


# export_conversations


def test_export_jsonl_writes_each_conversation_of_the_tenant_and_audits(tmp_path, aged):
    target = tmp_path / "acme.jsonl"

    out, _ = run("export_conversations", "--tenant", "acme", "--format", "jsonl", "--output", str(target))

    documents = [json.loads(line) for line in target.read_text().splitlines()]
    expected = sorted(aged[k].pk for k in ("old_a", "old_b", "recent"))
    assert [d["conversation"]["id"] for d in documents] == expected
    assert [m["seq"] for m in documents[0]["messages"]] == [1, 2, 3]  # the run's trigger message is seq 3
    assert "exported 3 conversation(s) with 7 message(s) of tenant acme as jsonl" in out
    records = AuditRecord.objects.filter(action="conversation.exported")
    assert sorted(int(r.resource_id) for r in records) == expected
    assert all(r.details["via"] == "command" for r in records)


def test_export_markdown_to_stdout_keeps_the_summary_off_the_transcript(aged):
    out, err = run("export_conversations", "--tenant", str(aged["old_other"].tenant_id), "--format", "markdown")

    assert out.startswith(f"# {aged['old_other'].title}")
    assert "### 1. User" in out and "message 1" in out
    assert "exported 1 conversation(s)" in err and "exported" not in out


def test_export_refuses_an_unknown_tenant_and_format(aged):
    with pytest.raises(CommandError, match="No tenant"):
        run("export_conversations", "--tenant", "nope")
    with pytest.raises(CommandError):
        run("export_conversations", "--tenant", "acme", "--format", "xml")


# agent_check


def test_agent_check_against_the_local_provider_reports_latency_and_leaves_nothing():
    before = (Tenant.objects.count(), User.objects.count(), Task.objects.count(), AuditRecord.objects.count())

    out, _ = run("agent_check")

    assert "provider   local" in out and "tool call  add_task" in out
    assert "ok: local answered in" in out
    assert (Tenant.objects.count(), User.objects.count(), Task.objects.count(), AuditRecord.objects.count()) == before


def test_agent_check_against_an_openai_compatible_server(fake_openai):  # noqa: F811
    fake_openai.reply("All good.")

    out, _ = run("agent_check", "--json", "--prompt", "ping")

    report = json.loads(out)
    assert (report["provider"], report["model"], report["ok"], report["reply"]) == (
        "openai",
        "fake-model",
        True,
        "All good.",
    )
    assert report["latency_ms"] >= 0 and report["first_delta_ms"] is not None
    assert fake_openai.requests[0]["body"]["messages"][-1] == {"role": "user", "content": "ping"}


def test_agent_check_fails_loudly_when_the_provider_fails(fake_openai):  # noqa: F811
    fake_openai.fail(500)

    with pytest.raises(CommandError, match="openai did not answer"):
        run("agent_check")


# retry_failed_runs


def test_retry_failed_runs_dry_run_then_for_real(django_capture_on_commit_callbacks):
    failed = [AgentRunFactory(status="failed"), AgentRunFactory(status="failed")]
    AgentRunFactory(status="completed")

    dry, _ = run("retry_failed_runs", "--dry-run")
    assert "2 failed run(s) would be retried" in dry and AgentRun.objects.count() == 3

    with django_capture_on_commit_callbacks(execute=True):
        out, _ = run("retry_failed_runs")
    again, _ = run("retry_failed_runs")

    for run_ in failed:
        retry = AgentRun.objects.get(trigger_message=run_.trigger_message, pk__gt=run_.pk)
        assert retry.status == "completed" and retry.reply_message is not None
    assert "retried 2 of 2 failed run(s)" in out and "retried 0 of 0" in again
    assert AuditRecord.objects.filter(action="run.retried", actor__isnull=True).count() == 2


def test_retry_failed_runs_of_one_tenant(django_capture_on_commit_callbacks):
    mine, other = AgentRunFactory(status="failed"), AgentRunFactory(status="failed")

    with django_capture_on_commit_callbacks(execute=False):
        run("retry_failed_runs", "--tenant", str(mine.tenant_id))

    assert AgentRun.objects.filter(trigger_message=mine.trigger_message).count() == 2
    assert AgentRun.objects.filter(trigger_message=other.trigger_message).count() == 1
