from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from audits import services

from ._tenants import tenant_from_option


class Command(BaseCommand):
    help = (
        "Retention: deletes audit records older than DAYS, oldest first, chain by chain. Each purged "
        "chain gets an audit.purged record naming the hash it now continues from, so "
        "verify_audit_chain still verifies it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS", help="Age in days (>= 1).")
        parser.add_argument("--tenant", help="Only this tenant's chain (slug or id).")

    def handle(self, *args, older_than, tenant=None, **options):
        if older_than < 1:
            raise CommandError("--older-than must be at least 1 day.")
        results = services.audit_purge(older_than=timedelta(days=older_than), tenant=tenant_from_option(tenant))
        for result in results:
            self.stdout.write(f"{result.chain}: deleted {result.deleted} records through seq {result.anchor_seq}")
        self.stdout.write(f"purged {sum(r.deleted for r in results)} records from {len(results)} chain(s)")
