from django.contrib import admin

from .models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["seq", "role", "sender", "content", "status", "created_at"]
    readonly_fields = fields
    ordering = ["seq"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "tenant", "owner", "channel", "status", "last_seq", "updated_at"]
    list_filter = ["status", "channel", "tenant"]
    list_select_related = ["tenant", "owner"]
    search_fields = ["title", "owner__email", "tenant__name"]
    date_hierarchy = "created_at"
    readonly_fields = ["tenant", "owner", "last_seq", "created_at", "updated_at"]
    filter_horizontal = ["participants"]
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "seq", "role", "sender", "status", "created_at"]
    list_filter = ["role", "status"]
    list_select_related = ["conversation", "sender"]
    search_fields = ["content", "client_message_id"]
    date_hierarchy = "created_at"
    readonly_fields = ["tenant", "conversation", "seq", "role", "sender", "created_at"]
