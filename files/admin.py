from django.contrib import admin

from .models import File


@admin.register(File)
class FileAdmin(admin.ModelAdmin):
    list_display = ("id", "filename", "tenant", "owner", "size", "status", "backend", "created_at")
    list_filter = ("status", "backend")
    list_select_related = ("tenant", "owner")
    search_fields = ("id", "filename")
    readonly_fields = [f.name for f in File._meta.fields]

    def has_add_permission(self, request):
        return False
