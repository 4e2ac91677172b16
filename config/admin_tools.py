"""What every app's admin shares: times to the second, text excerpts, read-only pages.

Django admin helpers only; imports no app (the apps' ``admin.py`` modules import it)."""

from django.utils import timezone

EXCERPT_CHARS = 80


def seconds(value) -> str:
    """A time to the second in the site's time zone (the admin's default shows minutes)."""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ReadOnlyAdminMixin:
    """A ``ModelAdmin`` whose rows come from the API, the agent or a command: staff read
    them; nobody adds, changes or deletes them here, superusers included."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
