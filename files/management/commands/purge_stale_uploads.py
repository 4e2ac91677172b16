from django.core.management.base import BaseCommand

from files import services


class Command(BaseCommand):
    help = "Expire uploads with no new chunk for FILES_UPLOAD_TTL_HOURS and remove their chunks."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="list what would be purged, change nothing")

    def handle(self, *args, dry_run=False, **options):
        files = services.files_purge_stale(dry_run=dry_run)
        verb = "would purge" if dry_run else "purged"
        for file in files:
            self.stdout.write(
                f"{verb} {file.pk} {file.filename} ({file.size} bytes, idle since {file.updated_at:%Y-%m-%d %H:%M})"
            )
        self.stdout.write(f"{verb} {len(files)} upload(s)")
