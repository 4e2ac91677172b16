"""Admin list pages on large tables, and the retention and export commands.

    .venv/bin/python bench/staff_admin.py [--conversations 20000] [--messages-per 10]

Runs against whatever DATABASE_URL names, in a throwaway database (created and dropped
here: PostgreSQL ``test_<name>_staff_bench``). Fills 20 tenants with N conversations of
M messages each (bulk inserts, seq 1..M) and one failed agent run per 10 conversations,
then, as a superuser through the real middleware and admin views, times each changelist
page (median of 7) and counts its queries; then times ``export_conversations`` of one
tenant and a ``purge_conversations --dry-run`` over everything. Prints figures; asserts
nothing about them.
"""

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# The test client speaks plain HTTP to "testserver": no HTTPS redirect, that host allowed.
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver")

import django  # noqa: E402

django.setup()

from django.db import connection, connections  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

# Queries counted on every connection of every thread (the admin view may not run on the
# thread, hence the connection object, the bench started on).
QUERIES = [0]


def _count(execute, sql, params, many, context):
    QUERIES[0] += 1
    return execute(sql, params, many, context)


def _count_on(sender, connection, **kwargs):
    connection.execute_wrappers.append(_count)


def timed(fn, repeat=7):
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), result


def fill(conversations: int, per: int) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from accounts.models import Tenant, User
    from chat.models import AgentRun
    from conversations.models import Conversation, Message

    tenants = Tenant.objects.bulk_create([Tenant(name=f"Bench {i}", slug=f"bench-{i}") for i in range(20)])
    owners = [User.objects.create_user(f"owner{i}@bench.example", "x", tenant=t) for i, t in enumerate(tenants)]
    now = timezone.now()
    batch = 2000
    for start in range(0, conversations, batch):
        rows = []
        for n in range(start, min(start + batch, conversations)):
            owner = owners[n % len(owners)]
            at = now - timedelta(days=n % 90)
            rows.append(
                Conversation(
                    tenant_id=owner.tenant_id,
                    owner=owner,
                    title=f"Bench {n}",
                    last_seq=per,
                    created_at=at,
                    updated_at=at,
                )
            )
        made = Conversation.objects.bulk_create(rows)
        messages = [
            Message(
                tenant_id=c.tenant_id,
                conversation=c,
                seq=s,
                role="user" if s % 2 else "assistant",
                sender_id=c.owner_id if s % 2 else None,
                content=f"message {s} of conversation {c.pk} " * 3,
                created_at=c.created_at,
            )
            for c in made
            for s in range(1, per + 1)
        ]
        stored = Message.objects.bulk_create(messages, batch_size=5000)
        firsts = {m.conversation_id: m for m in stored if m.seq == 1}
        AgentRun.objects.bulk_create(
            [
                AgentRun(
                    tenant_id=c.tenant_id,
                    conversation=c,
                    user_id=c.owner_id,
                    trigger_message=firsts[c.pk],
                    provider="local",
                    model="local-task-assistant",
                    status="failed",
                    error="bench",
                )
                for c in made[::10]
            ]
        )
        print(f"  filled {min(start + batch, conversations)}/{conversations} conversations", file=sys.stderr)


def bench_pages() -> None:
    from django.test import Client

    from accounts.models import Tenant, User
    from conversations.models import Conversation

    staff = User.objects.create_superuser("ops@bench.example", "bench-passphrase-123")
    client = Client()
    client.force_login(staff)
    some = Conversation.objects.order_by("-id").first()
    tenant = Tenant.objects.get(slug="bench-3")
    pages = [
        ("conversations", "/admin/conversations/conversation/"),
        ("conversations, tenant filter", f"/admin/conversations/conversation/?tenant__id__exact={tenant.pk}"),
        ("conversations, search", "/admin/conversations/conversation/?q=Bench+123"),
        ("conversation change page", f"/admin/conversations/conversation/{some.pk}/change/"),
        ("messages", "/admin/conversations/message/"),
        ("messages, one conversation", f"/admin/conversations/message/?conversation={some.pk}"),
        ("messages, tenant filter", f"/admin/conversations/message/?tenant__id__exact={tenant.pk}"),
        ("agent runs", "/admin/chat/agentrun/"),
        ("agent runs, failed", "/admin/chat/agentrun/?status__exact=failed"),
        ("tenants (member counts)", "/admin/accounts/tenant/"),
        ("users", "/admin/accounts/user/"),
    ]
    print(f"{'page':34} {'median ms':>10} {'queries':>8}")
    for name, url in pages:
        before = QUERIES[0]
        response = client.get(url)
        queries = QUERIES[0] - before
        assert response.status_code == 200, (url, response.status_code)
        median, _ = timed(lambda url=url: client.get(url))
        print(f"{name:34} {median:10.1f} {queries:8d}")


def bench_commands() -> None:
    from django.core.management import call_command

    from conversations.models import Conversation, Message

    out = io.StringIO()
    started = time.perf_counter()
    call_command(
        "export_conversations", "--tenant", "bench-3", "--output", os.devnull, stdout=out, stderr=io.StringIO()
    )
    elapsed = time.perf_counter() - started
    print(f"export_conversations --tenant bench-3 (jsonl): {elapsed:.2f} s  [{out.getvalue().strip()}]")
    started = time.perf_counter()
    call_command("purge_conversations", "--older-than", "30", "--dry-run", stdout=out, stderr=io.StringIO())
    print(f"purge_conversations --older-than 30 --dry-run: {time.perf_counter() - started:.2f} s")
    print(f"  (tables: {Conversation.objects.count()} conversations, {Message.objects.count()} messages)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=20000)
    parser.add_argument("--messages-per", type=int, default=10)
    args = parser.parse_args()
    setup_test_environment()
    from django.db.backends.signals import connection_created

    connection_created.connect(_count_on)
    for conn in connections.all():
        conn.execute_wrappers.append(_count)
    connection.settings_dict.setdefault("TEST", {})
    connection.settings_dict["TEST"]["NAME"] = f"test_{connection.settings_dict['NAME']}_staff_bench"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        print(f"database: {connection.vendor}; {args.conversations} conversations x {args.messages_per} messages")
        fill(args.conversations, args.messages_per)
        connection.cursor().execute("ANALYZE") if connection.vendor == "postgresql" else None
        bench_pages()
        bench_commands()
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
