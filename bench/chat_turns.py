"""Chat turn latency and seq allocation throughput.

    .venv/bin/python bench/chat_turns.py [--turns 200] [--writers 8] [--messages 400]

Runs against whatever DATABASE_URL names, in a throwaway test database (created and
dropped here). Prints figures; asserts nothing about them.

1. Sync turns: ``POST /api/v1/chat`` through the real stack of middleware, JWT auth,
   idempotency-free path, the ``local`` agent with a tool call, audit records and the
   event publisher, all in one growing conversation (history is read every turn).
2. Seq allocation: ``message_create`` from N threads into one conversation (the row lock
   serialises them), messages per second and the check that seqs are gapless.
"""

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_turns(turns: int) -> None:
    from rest_framework.test import APIClient

    from accounts.models import Tenant, User
    from accounts.services import tokens_for

    tenant = Tenant.objects.create(name="Bench", slug="bench", tier="enterprise")
    user = User.objects.create_user("bench@example.com", "bench-passphrase-123", tenant=tenant, role="owner")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_for(user).access}")
    prompts = ["add a task to item {n}", "what are my tasks?", "mark item {n} done", "hello"]
    conversation_id, samples = None, []
    for n in range(turns):
        body = {"message": prompts[n % len(prompts)].format(n=n // len(prompts))}
        if conversation_id:
            body["conversation_id"] = conversation_id
        started = time.perf_counter()
        response = client.post("/api/v1/chat", body, format="json")
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content
        conversation_id = response.json()["conversation_id"]
    print(f"sync chat turns ({turns}, local provider, one conversation):")
    print(
        f"  median {statistics.median(samples):.1f} ms   p95 {percentile(samples, 0.95):.1f} ms   "
        f"max {max(samples):.1f} ms   throughput {turns / (sum(samples) / 1000):.0f} turns/s (one client)"
    )


def bench_seq(writers: int, messages: int) -> None:
    from accounts.models import Tenant, User
    from conversations.models import Conversation, Message
    from conversations.services import conversation_create, message_create

    tenant = Tenant.objects.create(name="Seq", slug="seq-bench")
    user = User.objects.create_user("seq@example.com", "bench-passphrase-123", tenant=tenant)
    conversation = conversation_create(user=user, title="seq")
    per_writer = messages // writers
    barrier = threading.Barrier(writers + 1)

    def write():
        try:
            barrier.wait()
            target = Conversation.objects.get(pk=conversation.pk)
            for i in range(per_writer):
                message_create(conversation=target, role="user", content=f"m{i}")
        finally:
            connection.close()

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    seqs = sorted(Message.objects.filter(conversation=conversation).values_list("seq", flat=True))
    gapless = seqs == list(range(1, writers * per_writer + 1))
    print(f"seq allocation ({writers} writers x {per_writer} messages, one conversation):")
    print(f"  {len(seqs) / elapsed:.0f} messages/s   {elapsed * 1000:.0f} ms total   gapless and unique: {gapless}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--messages", type=int, default=400)
    args = parser.parse_args()
    setup_test_environment()
    settings.RATELIMIT_ENABLE = False  # measuring the work, not the budget
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    print(f"database: {engine}; cache: {settings.CACHES['default']['BACKEND'].rsplit('.', 1)[-1]}")
    try:
        bench_turns(args.turns)
        if engine == "postgresql":
            bench_seq(args.writers, args.messages)
        else:
            print("seq allocation: skipped (needs PostgreSQL for concurrent writers)")
    finally:
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
