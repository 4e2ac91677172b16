from django.core.management.base import BaseCommand, CommandError

from audits import selectors

from ._tenants import tenant_from_option


class Command(BaseCommand):
    help = (
        "Verifies the audit hash chains (every tenant's and the platform's, or one tenant's) and "
        "lists every broken link of each, with why. Exits non-zero when a chain is broken. Record the "
        "printed head hashes elsewhere to also detect a rewrite of a whole chain."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="Only this tenant's chain (slug or id).")

    def handle(self, *args, tenant=None, **options):
        tenant = tenant_from_option(tenant)
        failures = 0
        chains = selectors.audit_chains_all() if tenant is None else selectors.audit_chains(tenant=tenant)
        for report in selectors.audit_chain_verify_all(chains=chains):
            if report.ok:
                self.stdout.write(
                    f"ok {report.chain}: {report.checked} records, head seq {report.head_seq} hash {report.head_hash}"
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
                    f" head seq {report.head_seq} hash {report.head_hash}"
                )
        if tenant is None:
            for tenant_id in selectors.audit_orphan_tenant_ids():
                failures += 1
                self.stdout.write(f"BROKEN tenant {tenant_id}: records exist but the chain head is gone")
        if failures:
            raise CommandError(f"{failures} audit chain(s) broken.")
