"""Audit retention on a schedule (CELERY_BEAT_SCHEDULE), when AUDIT_RETENTION_DAYS is set."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from . import services


@shared_task
def purge_old_audits() -> int:
    """Applies the retention period; 0 days (the default) keeps every record."""
    days = settings.AUDIT_RETENTION_DAYS
    if days <= 0:
        return 0
    return sum(result.deleted for result in services.audit_purge(older_than=timedelta(days=days)))
