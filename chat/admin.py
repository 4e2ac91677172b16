from django.contrib import admin, messages

from config.admin_tools import ReadOnlyAdminMixin, excerpt, seconds
from conversations.admin import conversation_inline_add

from .models import AgentRun, Task
from .services import runs

RUN_FIELDS = [
    "id",
    "conversation",
    "tenant",
    "user",
    "trigger_message",
    "reply_message",
    "provider",
    "model",
    "status",
    "attempts",
    "latency_ms",
    "error",
    "tool_calls",
    "usage",
    "claimed_by",
    "created",
    "queued",
    "started",
    "finished",
    "enqueue_failed_at",
]


class RunTimesMixin:
    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return seconds(obj.created_at)

    @admin.display(description="queued")
    def queued(self, obj):
        return seconds(obj.queued_at)

    @admin.display(description="started")
    def started(self, obj):
        return seconds(obj.started_at)

    @admin.display(description="finished")
    def finished(self, obj):
        return seconds(obj.finished_at)

    @admin.display(description="error")
    def error_excerpt(self, obj):
        return excerpt(obj.error, 60)


class AgentRunInline(RunTimesMixin, admin.TabularInline):
    """A conversation's agent runs, read-only, on the conversation page."""

    model = AgentRun
    fk_name = "conversation"
    fields = ["provider", "model", "status", "attempts", "latency_ms", "error_excerpt", "created", "finished"]
    readonly_fields = fields
    ordering = ["id"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


conversation_inline_add(AgentRunInline)


@admin.register(AgentRun)
class AgentRunAdmin(RunTimesMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Runs are records of what the agent did: read-only. A failed turn can be answered
    again (the "Retry" action, ``runs.run_retry``: a new run, audited)."""

    list_display = [
        "id",
        "conversation",
        "tenant",
        "provider",
        "model",
        "status",
        "latency_ms",
        "attempts",
        "error_excerpt",
        "created",
    ]
    list_filter = ["status", "provider", "tenant", "created_at"]
    list_select_related = ["conversation", "tenant"]
    search_fields = ["=id", "error", "conversation__title"]
    date_hierarchy = "created_at"
    ordering = ["-id"]
    show_full_result_count = False
    fields = RUN_FIELDS
    readonly_fields = RUN_FIELDS
    actions = ["retry_failed_runs"]

    def has_retry_permission(self, request):
        return request.user.has_perm("chat.change_agentrun")

    @admin.action(description="Re-queue selected failed runs (a new run each, audited)", permissions=["retry"])
    def retry_failed_runs(self, request, queryset):
        retried = skipped = 0
        for run in queryset.order_by("pk"):
            if runs.run_retry(run=run, actor=request.user, via="admin") is None:
                skipped += 1
            else:
                retried += 1
        level = messages.SUCCESS if retried else messages.WARNING
        self.message_user(
            request,
            f"Re-queued {retried} run(s); skipped {skipped} (not failed, or retried already).",
            level,
        )


@admin.register(Task)
class TaskAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """A user's own to-do items: staff read them (support), users and their agent change them."""

    list_display = ["id", "title", "owner", "tenant", "completed", "created"]
    list_filter = ["completed", "tenant"]
    list_select_related = ["owner", "tenant"]
    search_fields = ["title", "owner__email"]
    ordering = ["-id"]

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return seconds(obj.created_at)
