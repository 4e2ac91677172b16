from django.contrib import admin

from config.admin_tools import ReadOnlyAdminMixin

from .models import AuditChain, AuditRecord


class ReadOnlyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The trail is append-only: nobody adds, changes or deletes through the admin,
    superusers included (retention is ``manage.py purge_audits``)."""


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "tenant",
        "action",
        "actor_label",
        "resource_type",
        "resource_id",
        "source",
        "request_id",
        "chain_seq",
    ]
    list_filter = ["source", "action", "resource_type", "created_at"]
    list_select_related = ["tenant"]
    search_fields = ["action", "actor_label", "resource_id", "request_id", "ip", "tenant__slug"]
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
    # COUNT(*) over the whole trail on every page is the slow part of a big changelist.
    show_full_result_count = False
    raw_id_fields = ["tenant", "actor"]


@admin.register(AuditChain)
class AuditChainAdmin(ReadOnlyAdmin):
    list_display = ["key", "tenant", "last_seq", "anchor_seq", "last_hash", "created_at"]
    list_select_related = ["tenant"]
    search_fields = ["key", "tenant__slug", "tenant__name"]
