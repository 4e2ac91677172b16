from celery import shared_task

from . import services


@shared_task(name="files.tasks.purge_stale_uploads")
def purge_stale_uploads() -> int:
    """Periodic (beat): expire abandoned uploads and remove their chunks."""
    return len(services.files_purge_stale())
