"""Periodic maintenance of accounts (scheduled in CELERY_BEAT_SCHEDULE)."""

from celery import shared_task
from django.core.management import call_command


@shared_task
def flush_expired_tokens() -> None:
    """Drops expired refresh tokens (and their blacklist entries): simplejwt's own command."""
    call_command("flushexpiredtokens")
