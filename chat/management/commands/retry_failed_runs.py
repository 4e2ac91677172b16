from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.selectors import tenant_find
from chat.services import runs
from config.core.progress import Progress


class Command(BaseCommand):
    help = (
        "Answers failed turns again: for each failed agent run that is still the newest run of its "
        "message, a new queued run is handed to the workers (the failed run stays as it was). "
        "Each is recorded as run.retried. --dry-run only counts."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="Only this tenant (slug or id).")
        parser.add_argument("--since-hours", type=float, help="Only runs that failed in the last N hours.")
        parser.add_argument("--limit", type=int, help="At most this many runs (oldest first).")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be retried; change nothing.")

    def handle(self, *args, tenant=None, since_hours=None, limit=None, dry_run=False, **options):
        chosen = tenant_find(tenant) if tenant else None
        if tenant and chosen is None:
            raise CommandError(f"No tenant with slug or id {tenant!r}.")
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1.")
        since = timezone.now() - timedelta(hours=since_hours) if since_hours else None
        result = runs.runs_retry_failed(
            tenant_id=chosen.pk if chosen else None,
            since=since,
            limit=limit,
            dry_run=dry_run,
            progress=Progress("retrying runs", stream=self.stderr, enabled=options["verbosity"] > 0),
        )
        if dry_run:
            self.stdout.write(f"dry run: {result['found']} failed run(s) would be retried; nothing changed")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"retried {len(result['retried'])} of {result['found']} failed run(s)"
                f" (skipped {result['skipped']}: retried meanwhile); new runs: {result['retried']}"
            )
        )
