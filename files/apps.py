from django.apps import AppConfig


class FilesConfig(AppConfig):
    name = "files"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Composition: conversations validates a message's attachments through a resolver
        # it receives here, so conversations never imports files (docs/files.md).
        from conversations.attachments import attachment_resolver_set

        from .services import file_attachments_resolve

        attachment_resolver_set(file_attachments_resolve)
