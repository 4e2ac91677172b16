from django.apps import AppConfig


class ApiConfig(AppConfig):
    """``config.api`` is an app only for the rows its plumbing keeps (idempotency keys)
    and its maintenance command; the label keeps table names short (``api_idempotencykey``)."""

    name = "config.api"
    label = "api"
    verbose_name = "API plumbing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from .callers import connect_invalidation

        connect_invalidation()
