from django.core.management.base import BaseCommand

from audits import services

from ._tenants import tenant_from_option


class Command(BaseCommand):
    help = (
        "Seals the committed audit records not chained yet, in order (what the seal_chains task does "
        "after each commit and on its schedule). Safe to run at any time, also beside a running worker."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="Only this tenant's chain (slug or id).")

    def handle(self, *args, tenant=None, **options):
        sealed = services.audit_seal_chains(tenant=tenant_from_option(tenant))
        self.stdout.write(f"sealed {sealed} records")
