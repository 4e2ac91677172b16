from django.core.management.base import BaseCommand

from hub.services import deliveries


class Command(BaseCommand):
    help = "Re-queues failed outbound deliveries (oldest first) with a fresh budget of attempts."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=1000, help="at most this many deliveries")

    def handle(self, *args, limit: int, **options):
        requeued = deliveries.deliveries_requeue_failed(limit=limit)
        self.stdout.write(f"requeued {len(requeued)} deliver{'y' if len(requeued) == 1 else 'ies'}")
