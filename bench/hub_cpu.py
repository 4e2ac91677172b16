"""CPU per request of the hub's two web paths, in-process (load-independent enough to
compare before/after on a shared machine).

    .venv/bin/python bench/hub_cpu.py [--requests 100] [--rounds 5] [--queries]

Drives, through Django's test client against DATABASE_URL (migrated; point it at a bench
database) and REDIS_URL (the broker the after-commit hand-over publishes to):

- ``post``: ``POST /api/v1/conversations/{id}/messages`` in a conversation bound to a
  WhatsApp contact (202: the message, its delivery and status rows, the audit, after
  commit the ``queued`` move and the broker hand-over);
- ``webhook``: the simulator's signed ``delivered`` report for one of those messages,
  ``POST /api/v1/channels/whatsapp/webhook``;
- ``deliver``: ``delivery_execute`` of one of them, the worker's own work (claim, send with
  0 ms latency, settle; the report excluded).

Prints for each the median over ``--rounds`` of ``time.process_time`` per request and the
statements of one (``--queries`` lists them). Needs DJANGO_SECURE=false,
DJANGO_ALLOWED_HOSTS=testserver and a high RATE_LIMIT_FREE.
"""

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", action="store_true")
    parser.add_argument("--profile", choices=["post", "deliver", "webhook"], help="cProfile one path's last round")
    parser.add_argument("--profile-filter", help="regex of the profile lines to print (default: the top 40)")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.test import Client
    from django.utils import timezone

    from accounts.models import Tenant, User
    from accounts.services import tokens_for
    from hub import platforms
    from hub.connectors.base import connector_for
    from hub.models import Delivery
    from hub.secrets import SIGNATURE_HEADER, secret_decrypt, signature_for
    from hub.services import accounts, bindings, deliveries

    settings.HUB_WEBHOOK_BASE_URL = ""
    # Statements of one request, whatever thread runs it (the view may run off this one).
    from django.db.backends import utils as db_utils

    statements: list[str] | None = None
    original_execute = db_utils.CursorWrapper._execute

    def counting_execute(self, sql, params, *rest):
        if statements is not None:
            statements.append(sql)
        return original_execute(self, sql, params, *rest)

    db_utils.CursorWrapper._execute = counting_execute
    tag = os.urandom(3).hex()
    tenant = Tenant.objects.create(name=f"hubcpu {tag}", slug=f"hubcpu-{tag}")
    user = User.objects.create_user(f"hubcpu-{tag}@example.com", None, tenant=tenant, role="owner")
    account, _ = accounts.channel_account_create(
        user=user, channel="whatsapp", name="cpu", external_id=f"1999{int(tag, 16):08d}", settings={}
    )
    secret = secret_decrypt(account.secret_encrypted)
    binding = bindings.binding_create(user=user, account_id=account.pk, address="447700900999")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {tokens_for(user).access}")
    url = f"/api/v1/conversations/{binding.conversation_id}/messages"
    connector = connector_for("whatsapp")
    connector.after_sent = lambda outbound: None  # the report is measured on its own

    def post() -> int:
        response = client.post(url, {"content": "Order shipped"}, content_type="application/json")
        assert response.status_code == 202, response.content[:300]
        return response.json()["message"]["id"]

    pending: list[int] = []

    def deliver() -> None:
        delivery_id = Delivery.objects.filter(message_id=pending.pop()).values_list("pk", flat=True).get()
        assert deliveries.delivery_execute(delivery_id=delivery_id).outcome == "sent"

    sent: list[str] = []

    def webhook() -> None:
        payload = platforms.whatsapp_statuses(
            phone_number_id=account.external_id,
            recipient="447700900999",
            message_id=sent.pop(),
            status="delivered",
            timestamp=int(timezone.now().timestamp()),
        )
        body = json.dumps(payload).encode()
        response = client.post(
            "/api/v1/channels/whatsapp/webhook",
            body,
            content_type="application/json",
            headers={SIGNATURE_HEADER: signature_for(body, secret)},
        )
        assert response.status_code == 200, response.content[:300]

    def measure(name, fn, prepare=None, key=""):
        nonlocal statements
        per_round = []
        captured = []
        for r in range(args.rounds + 1):
            if prepare:
                prepare(args.requests + 1)
            if r == 0:  # warm-up round; the statements of its last request
                for _ in range(args.requests - 1):
                    fn()
                statements = captured
                fn()
                statements = None
                continue
            profile = cProfile.Profile() if args.profile == key and r == args.rounds else None
            started = time.process_time()
            if profile:
                profile.enable()
            for _ in range(args.requests):
                fn()
            if profile:
                profile.disable()
            per_round.append((time.process_time() - started) * 1000 / args.requests)
            if profile:
                pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile_filter or 40)
        print(
            f"{name}: {statistics.median(per_round):.2f} ms CPU per request (median of {args.rounds} rounds), "
            f"{len(captured)} statements"
        )
        if args.queries:
            for sql in captured:
                print("    ", sql[:150])

    def prepare_deliver(n):
        pending[:] = [post() for _ in range(n)]

    def prepare_webhook(n):
        ids = [post() for _ in range(n)]
        for delivery_id in Delivery.objects.filter(message_id__in=ids).values_list("pk", flat=True):
            deliveries.delivery_execute(delivery_id=delivery_id)
        sent[:] = list(Delivery.objects.filter(message_id__in=ids).values_list("external_id", flat=True))

    measure("post (202)", post, key="post")
    measure("deliver (worker)", deliver, prepare_deliver, key="deliver")
    measure("webhook (delivered report)", webhook, prepare_webhook, key="webhook")


if __name__ == "__main__":
    main()
