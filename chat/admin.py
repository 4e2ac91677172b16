from django.contrib import admin

from .models import AgentRun, Task


@admin.register(AgentRun)
class AgentRunAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "provider", "model", "status", "latency_ms", "attempts", "created_at"]
    list_filter = ["status", "provider"]
    list_select_related = ["conversation"]
    search_fields = ["error", "conversation__title"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AgentRun._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "owner", "completed", "created_at"]
    list_filter = ["completed"]
    list_select_related = ["owner"]
    search_fields = ["title", "owner__email"]
