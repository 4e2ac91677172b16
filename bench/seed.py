"""Seeds the benchmark's database (run by bench/run.py in a process of its own, on the
bench environment) and prints what the load generators need as one JSON line.

    python bench/seed.py --users 50 --conversations 64 --audit-rows 1000000

One enterprise tenant (users without a password: they get their tokens here, and no
password hashing slows the seed) (the bench server raises the enterprise budget so the rate limiter
does its work on every request but never refuses), an owner, ``--users`` members with one
conversation each (the 202 path's "concurrent users"), ``--conversations`` conversations of
the owner, and ``--audit-rows`` audit records of the tenant inserted by one
``INSERT ... SELECT generate_series`` (the chain head is moved past them, so the records the
app appends during the run chain on as usual; they are stored sealed, so the sealer has
nothing to do for them; their hashes are not a valid chain: nothing in the benchmark
verifies it, and ``verify_audit_chain`` reports the bench tenant broken, by design).
"""

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.db import connection, models, transaction  # noqa: E402


def _fill_expression(field, *, owner_id: int, rows: int) -> tuple[str, list]:
    """The SQL (with params) that fills one column of AuditRecord for row ``g`` of
    generate_series(1, rows). Fails loudly on a column it does not know."""
    name = field.name
    spread = "make_interval(secs => (%s - g) * 30)"  # one record every 30 s, newest now
    known = {
        "tenant": ("%s", None),  # filled by the caller
        "actor": ("CASE WHEN g %% 3 = 0 THEN %s ELSE NULL END", [owner_id]),
        "actor_label": ("CASE WHEN g %% 3 = 0 THEN 'owner@bench.example' ELSE '' END", []),
        "action": (
            "(ARRAY['auth.login','conversation.created','message.sent','run.completed','run.failed'])[1 + g %% 5]",
            [],
        ),
        "resource_type": ("'conversation'", []),
        "resource_id": ("(g %% 5000)::text", []),
        "details": ("jsonb_build_object('n', g)", []),
        "request_id": ("'bench-' || g", []),
        "ip": ("'127.0.0.1'", []),
        "user_agent": ("'bench'", []),
        "created_at": (f"now() - {spread}", [rows]),
        "chain_seq": ("g", []),
        "prev_hash": ("md5((g - 1)::text) || md5((g - 1)::text)", []),
        "hash": ("md5(g::text) || md5(g::text)", []),
        # Sealed as the sealer seals (sequence, hashes and sealed_at together): the sealer's
        # queue is chain_seq NULL, and a sealed record without sealed_at would be a state
        # the app never writes.
        "sealed_at": (f"now() - {spread}", [rows]),
    }
    if name in known:
        return known[name]
    if field.null:
        return "NULL", []
    if field.has_default():
        default = field.get_default()
        if isinstance(field, models.DateTimeField):
            return "now()", []
        return "%s", [field.get_db_prep_save(default, connection)]
    raise SystemExit(f"bench/seed.py: no rule to fill AuditRecord.{name}; add one to _fill_expression")


def seed_audits(*, tenant, owner, rows: int) -> dict:
    from audits.models import AuditChain, AuditRecord, chain_key

    started = time.perf_counter()
    table = connection.ops.quote_name(AuditRecord._meta.db_table)
    with transaction.atomic(), connection.cursor() as cursor:
        # The app may have audited the registration already: start after the chain head.
        chain, _ = AuditChain.objects.select_for_update().get_or_create(
            key=chain_key(tenant.id), defaults={"tenant": tenant}
        )
        offset = chain.last_seq
        columns, expressions, params = [], [], []
        for field in AuditRecord._meta.concrete_fields:
            if field.primary_key:
                continue
            if field.name == "tenant":
                sql, args = "%s", [tenant.id]
            else:
                sql, args = _fill_expression(field, owner_id=owner.id, rows=offset + rows)
            columns.append(connection.ops.quote_name(field.column))
            expressions.append(sql)
            params.extend(args)
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"SELECT {', '.join(expressions)} FROM generate_series({offset + 1}, {offset + rows}) AS g"
        )
        cursor.execute(sql, params)
        last_seq = offset + rows
        cursor.execute("SELECT md5(%s::text) || md5(%s::text)", [last_seq, last_seq])
        (last_hash,) = cursor.fetchone()
        AuditChain.objects.filter(pk=chain.pk).update(last_seq=last_seq, last_hash=last_hash)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
    return {"audit_rows": rows, "audit_seed_seconds": round(time.perf_counter() - started, 1)}


def deep_cursor(*, tenant, depth_from_end: int) -> str:
    """The audits list's cursor for the page ``depth_from_end`` records before the oldest:
    DRF's cursor is base64 of ``o=<offset>&r=<reverse>&p=<position>``, the position being the
    first ordering column (audits/views.py ``cursor_ordering``)."""
    from audits.models import AuditRecord
    from audits.views import AuditRecordViewSet

    first = AuditRecordViewSet.cursor_ordering[0]
    column = first.lstrip("-")
    rows = AuditRecord.objects.filter(tenant=tenant).order_by(*AuditRecordViewSet.cursor_ordering)
    count = rows.count()
    position = rows.values_list(column, flat=True)[max(count - depth_from_end, 0)]
    return base64.b64encode(urlencode({"o": 0, "r": 0, "p": str(position)}).encode()).decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--audit-rows", type=int, default=1_000_000)
    args = parser.parse_args()

    from accounts.models import Tenant, User
    from accounts.services import tokens_for
    from conversations.services import conversation_create

    tenant = Tenant.objects.create(name="Bench", slug="bench", tier=Tenant.Tier.ENTERPRISE)
    owner = User.objects.create_user("owner@bench.example", None, tenant=tenant, role="owner")
    users = [
        User.objects.create_user(f"user{n}@bench.example", None, tenant=tenant, role="member")
        for n in range(args.users)
    ]
    out = {
        "owner_token": tokens_for(owner).access,
        "users": [
            {"token": tokens_for(user).access, "conversation": conversation_create(user=user, title=f"u{n}").id}
            for n, user in enumerate(users)
        ],
        "conversations": [conversation_create(user=owner, title=f"c{n}").id for n in range(args.conversations)],
        # Every user takes part, so the 500 listeners spread over 51 users (10 sockets each):
        # a per-user cap on open sockets of 10 or more does not refuse them.
        "ws_conversation": conversation_create(
            user=owner, title="listeners", participant_ids=[user.id for user in users]
        ).id,
    }
    if args.audit_rows:
        out.update(seed_audits(tenant=tenant, owner=owner, rows=args.audit_rows))
        out["deep_cursor"] = deep_cursor(tenant=tenant, depth_from_end=100)
    print("SEED " + json.dumps(out))


if __name__ == "__main__":
    main()
