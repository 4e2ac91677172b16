"""CPU per request of the hub's web paths through the whole ASGI application (as uvicorn
or daphne serves them: middleware, thread hops, the async webhook view), this tree against
another checkout, one process each.

    .venv/bin/python bench/hub_asgi_cpu.py [--requests 200] [--rounds 5] [--before DIR] [--alternate 2]

On DATABASE_URL (migrated; a bench database) and REDIS_URL (a Redis of your own: the
after-commit hand-overs publish to its broker queue, which is flushed, with the whole
database number, at the end). A tenant owner with a WhatsApp simulator account and one
bound conversation, then for each path the median over ``--rounds`` rounds of
``time.process_time`` (every thread of the process) per request:

- ``post``: ``POST /api/v1/conversations/{id}/messages`` (202; the message, its delivery
  and ``accepted`` row, the audit; after commit the ``queued`` move and the hand-over);
- ``webhook x1``: the platform's signed ``delivered`` report of one message (``sent``), one
  notification a message, as the simulators posted them;
- ``webhook x10``: one notification carrying ten messages' ``delivered`` reports
  (``value.statuses[]``), CPU per notification and per report;
- ``deliver``: ``delivery_execute`` (the worker's claim, 0 ms send, settle; no report).

The payloads are built here (the Cloud API's shape), so the same child runs in a checkout
that has no batch builder. ``--alternate N`` runs before/after N times, alternating.
"""

import argparse
from pathlib import Path

from inprocess import app_env, run_child

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, hashlib, hmac, json, os, statistics, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from django.conf import settings
from django.utils import timezone
from accounts.models import Tenant, User
from accounts.services import tokens_for
from hub.connectors.base import connector_for
from hub.models import Delivery
from hub.secrets import secret_decrypt
from hub.services import accounts, bindings, deliveries
from config.asgi import application
from inprocess import asgi_request, http_scope

N, ROUNDS = int(sys.argv[1]), int(sys.argv[2])
settings.HUB_WEBHOOK_BASE_URL = ""
connector_for("whatsapp").after_sent = lambda outbound: None  # reports are measured on their own
tag = os.urandom(3).hex()
tenant = Tenant.objects.create(name=f"hubasgi {tag}", slug=f"hubasgi-{tag}", tier="enterprise")
user = User.objects.create_user(f"hubasgi-{tag}@example.com", None, tenant=tenant, role="owner")
account, _ = accounts.channel_account_create(
    user=user, channel="whatsapp", name="cpu", external_id=f"1888{int(tag, 16):08d}", settings={}
)
secret = secret_decrypt(account.secret_encrypted)
binding = bindings.binding_create(user=user, account_id=account.pk, address="447700900888")
token = tokens_for(user).access
POST_PATH = f"/api/v1/conversations/{binding.conversation_id}/messages"
POST_BODY = b'{"content": "Order shipped"}'
HOOK_PATH = "/api/v1/channels/whatsapp/webhook"


async def post():
    status = await asgi_request(application, http_scope("POST", POST_PATH, token=token, body=POST_BODY), POST_BODY)
    assert status == 202, status


def notification(ids):
    now = str(int(timezone.now().timestamp()))
    payload = {"object": "whatsapp_business_account", "entry": [{"id": account.external_id, "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": account.external_id, "phone_number_id": account.external_id},
        "statuses": [{"id": i, "status": "delivered", "timestamp": now, "recipient_id": "447700900888"} for i in ids]}}]}]}
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, [(b"x-hub-signature-256", signature.encode())]


async def webhook(ids):
    body, headers = notification(ids)
    status = await asgi_request(application, http_scope("POST", HOOK_PATH, body=body, headers=headers), body)
    assert status == 200, status


def sent_ids(n):
    # n messages posted and sent (their delivered report not made): what a webhook moves.
    asyncio.run(many(post, n))
    ids = list(Delivery.objects.filter(message__conversation_id=binding.conversation_id, state="pending")
               .order_by("pk").values_list("pk", "external_id"))
    for pk, _ in ids:  # earlier rows' pending deliveries too
        deliveries.delivery_execute(delivery_id=pk)
    return [external_id for _, external_id in ids[-n:]]


async def many(fn, n, *args):
    for _ in range(n):
        await fn(*args)


def measure(name, run, prepare=None, per=1):
    rounds = []
    for r in range(ROUNDS + 1):
        state = prepare() if prepare else None
        cpu = time.process_time()
        run(state)
        time.sleep(0.05)  # after-commit work on other threads, inside the round
        if r:  # the first is the warm-up
            rounds.append((time.process_time() - cpu) / N * 1e6)
    return {"name": name, "cpu_us": statistics.median(rounds), "per": per, "rounds": [round(x) for x in rounds]}


async def _each(ids):
    for i in ids:
        await webhook([i])


async def _batches(ids):
    for k in range(0, len(ids), 10):
        await webhook(ids[k:k + 10])


def _deliver_prepare():
    asyncio.run(many(post, N))
    return list(Delivery.objects.filter(message__conversation_id=binding.conversation_id, state="pending")
                .values_list("pk", flat=True))


def _deliver(ids):
    for pk in ids:
        assert deliveries.delivery_execute(delivery_id=pk).outcome == "sent"


results = [
    measure("post (202)", lambda _: asyncio.run(many(post, N))),
    measure("webhook x1", lambda ids: asyncio.run(_each(ids)), lambda: sent_ids(N)),
    measure("webhook x10", lambda ids: asyncio.run(_batches(ids)), lambda: sent_ids(N * 10), per=10),
    measure("deliver (worker)", _deliver, _deliver_prepare),
]
print(json.dumps(results))
"""


def measure(tree: Path, requests: int, rounds: int) -> list[dict]:
    env = app_env(CELERY_TASK_ALWAYS_EAGER="false", LOG_LEVEL="WARNING")
    env["CELERY_BROKER_URL"] = env["REDIS_URL"]
    return run_child(tree, CHILD, [str(requests), str(rounds)], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--alternate", type=int, default=1)
    args = parser.parse_args()
    trees = ([("before", args.before)] if args.before else []) + [("this tree", ROOT)]
    try:
        for _ in range(args.alternate):
            for label, tree in trees:
                for row in measure(tree, args.requests, args.rounds):
                    per = f", {row['cpu_us'] / row['per']:.0f} us a report" if row["per"] > 1 else ""
                    print(f"{label:<10} {row['name']:<18} CPU {row['cpu_us']:7.0f} us/request{per}  {row['rounds']}")
    finally:
        import os

        import redis

        redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", os.environ["REDIS_URL"])).flushdb()


if __name__ == "__main__":
    main()
