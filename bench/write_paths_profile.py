"""cProfile of the write paths, in-process, one request at a time (issue 11, second round).

    .venv/bin/python bench/write_paths_profile.py messages|chat [--requests 100] [--top 30]

Drives ``POST /api/v1/conversations/{id}/messages`` (202) or ``POST /api/v1/chat`` (the
local agent, one tool call) through Django's test client against DATABASE_URL and REDIS_URL
(migrated; a tenant "p2b" and its owner are created when missing, so point it at a
benchmark database), and prints: the statements of one request, the wall time per request,
and the functions with the most cumulative and own time. Needs DJANGO_SECURE=false (no SSL
redirect), DJANGO_ALLOWED_HOSTS=testserver and a high RATE_LIMIT_ENTERPRISE.
Figures and what they showed: docs/benchmarks.md, "Second round: the write paths".
"""

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", choices=["messages", "chat"])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts.models import Tenant, User
    from accounts.services import tokens_for

    tenant, _ = Tenant.objects.get_or_create(slug="p2b", defaults={"name": "P2B", "tier": Tenant.Tier.ENTERPRISE})
    user = User.objects.filter(email="p2b@example.com").first() or User.objects.create_user(
        "p2b@example.com", None, tenant=tenant, role="owner"
    )
    client = Client(HTTP_AUTHORIZATION=f"Bearer {tokens_for(user).access}")
    created = client.post("/api/v1/conversations/", {"title": "bench"}, content_type="application/json")
    conversation_id = created.json()["id"]

    def one() -> None:
        if args.path == "messages":
            url, body = f"/api/v1/conversations/{conversation_id}/messages", {"content": "hello"}
        else:
            url, body = "/api/v1/chat", {"message": "add a task to buy milk"}
        response = client.post(url, body, content_type="application/json")
        if response.status_code not in (200, 202):
            raise SystemExit(f"{url}: {response.status_code} {response.content[:300]!r}")

    for _ in range(5):
        one()
    with CaptureQueriesContext(connection) as queries:
        one()
    print(f"{len(queries.captured_queries)} statements in one request:")
    for query in queries.captured_queries:
        print("  ", query["sql"][:120])
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    for _ in range(args.requests):
        one()
    profile.disable()
    print(f"{(time.perf_counter() - started) * 1000 / args.requests:.1f} ms per request (under cProfile)")
    stats = pstats.Stats(profile)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
