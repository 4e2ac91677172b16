from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from audits import selectors
from audits.models import chain_key

from ._tenants import tenant_from_option


def _backlog(unsealed: int, oldest_at) -> str:
    if not unsealed:
        return "unsealed 0"
    age = max(0.0, (timezone.now() - oldest_at).total_seconds())
    return f"unsealed {unsealed} (oldest {age:.1f} s)"


class Command(BaseCommand):
    help = (
        "Verifies the sealed part of the audit hash chains (every tenant's and the platform's, or one "
        "tenant's), lists every broken link of each with why, and reports each chain's unsealed backlog "
        "(records committed but not chained yet: count and age of the oldest). Exits non-zero when a chain "
        "is broken, or when the backlog is older than --max-unsealed-age. Record the printed head hashes "
        "elsewhere to also detect a rewrite of a whole chain."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="Only this tenant's chain (slug or id).")
        parser.add_argument(
            "--max-unsealed-age",
            type=float,
            metavar="SECONDS",
            help="Also fail when a chain's oldest unsealed record is older than this (the sealer is not running).",
        )

    def handle(self, *args, tenant=None, max_unsealed_age=None, **options):
        tenant = tenant_from_option(tenant)
        failures = 0
        chains = selectors.audit_chains_all() if tenant is None else selectors.audit_chains(tenant=tenant)
        stale = []
        for report in selectors.audit_chain_verify_all(chains=chains):
            backlog = _backlog(report.unsealed, report.oldest_unsealed_at)
            if report.ok:
                self.stdout.write(
                    f"ok {report.chain}: {report.checked} records, head seq {report.head_seq}"
                    f" hash {report.head_hash}, {backlog}"
                )
            else:
                failures += 1
                for link in report.breaks:
                    self.stdout.write(
                        f"BROKEN {report.chain} at seq {link.seq} (record id {link.record_id}): {link.reason}"
                    )
                if report.unlisted_breaks:
                    self.stdout.write(f"BROKEN {report.chain}: {report.unlisted_breaks} more broken link(s) not listed")
                self.stdout.write(
                    f"{report.chain}: {report.broken_count} broken link(s) in {report.checked} records,"
                    f" head seq {report.head_seq} hash {report.head_hash}, {backlog}"
                )
            stale.append((report.chain, report.oldest_unsealed_at))
        unchained = selectors.audit_unchained_backlog()
        if tenant is not None:
            unchained = [b for b in unchained if b.chain == chain_key(tenant.pk)]
        for backlog in unchained:
            self.stdout.write(
                f"pending {backlog.chain}: no sealed records yet, {_backlog(backlog.unsealed, backlog.oldest_unsealed_at)}"
            )
            stale.append((backlog.chain, backlog.oldest_unsealed_at))
        if tenant is None:
            for tenant_id in selectors.audit_orphan_tenant_ids():
                failures += 1
                self.stdout.write(f"BROKEN tenant {tenant_id}: records exist but the chain head is gone")
        if max_unsealed_age is not None:
            now = timezone.now()
            for chain, oldest_at in stale:
                if oldest_at is not None and (now - oldest_at).total_seconds() > max_unsealed_age:
                    failures += 1
                    self.stdout.write(f"STALE {chain}: unsealed records older than {max_unsealed_age:g} s")
        if failures:
            raise CommandError(f"{failures} audit chain(s) broken or not sealed in time.")
