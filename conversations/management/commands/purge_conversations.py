from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from accounts.selectors import tenant_find
from config.core.progress import Progress
from conversations import services


class Command(BaseCommand):
    help = (
        "Retention: deletes conversations without activity (no new message, no change) for more than "
        "DAYS days, with their messages and agent runs, in batches; each batch is recorded as "
        "conversation.purged on the tenant's audit trail. --dry-run only counts."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS", help="Inactivity in days (>= 1).")
        parser.add_argument("--tenant", help="Only this tenant (slug or id).")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument(
            "--batch-size", type=int, default=services.PURGE_BATCH, help="Conversations per transaction."
        )

    def handle(self, *args, older_than, tenant=None, dry_run=False, batch_size=services.PURGE_BATCH, **options):
        if older_than < 1:
            raise CommandError("--older-than must be at least 1 day.")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        chosen = tenant_find(tenant) if tenant else None
        if tenant and chosen is None:
            raise CommandError(f"No tenant with slug or id {tenant!r}.")
        result = services.conversations_purge(
            older_than=timedelta(days=older_than),
            tenant_id=chosen.pk if chosen else None,
            dry_run=dry_run,
            batch_size=batch_size,
            progress=Progress("purging conversations", stream=self.stderr, enabled=options["verbosity"] > 0),
        )
        scope = f"tenant {chosen.slug}" if chosen else "all tenants"
        cutoff = result["cutoff"].isoformat(timespec="seconds")
        if dry_run:
            self.stdout.write(
                f"dry run: would delete {result['conversations']} conversation(s) with {result['messages']} "
                f"message(s) inactive since before {cutoff} ({scope}, {len(result['tenants'])} tenant(s)); "
                "nothing deleted"
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"deleted {result['deleted']} conversation(s) with {result['messages']} message(s) inactive since "
                f"before {cutoff} ({scope}, {len(result['tenants'])} tenant(s))"
            )
        )
