"""Periodic maintenance of accounts (scheduled in CELERY_BEAT_SCHEDULE)."""

from celery import shared_task
from django.core.management import call_command


@shared_task
def flush_expired_tokens() -> None:
    """Drops expired refresh tokens (and their blacklist entries): simplejwt's own command;
    then the refresh token families left empty."""
    from .services import refresh_token_families_purge

    call_command("flushexpiredtokens")
    refresh_token_families_purge()
