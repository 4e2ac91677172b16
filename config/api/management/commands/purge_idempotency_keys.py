from django.core.management.base import BaseCommand

from config.api.idempotency import idempotency_keys_purge


class Command(BaseCommand):
    help = "Deletes expired Idempotency-Key records (kept IDEMPOTENCY_TTL_HOURS)."

    def handle(self, *args, **options):
        deleted = idempotency_keys_purge()
        self.stdout.write(f"Deleted {deleted} expired idempotency keys.")
