from celery import shared_task

from .idempotency import idempotency_keys_purge


@shared_task(name="config.api.tasks.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    """Deletes expired Idempotency-Key rows (scheduled hourly by celery beat)."""
    return idempotency_keys_purge()
