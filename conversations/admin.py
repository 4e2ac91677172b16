from django.contrib import admin, messages
from django.db import transaction

from . import services
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
    """Staff change what the API lets an owner change (title, status, metadata) and delete
    conversations, through the same services, so every write is audited on the
    conversation's tenant trail with the staff user as actor. Conversations are started by
    their users (API, channels), not created here."""

    list_display = ["id", "title", "tenant", "owner", "channel", "status", "last_seq", "updated_at"]
    list_filter = ["status", "channel", "tenant"]
    list_select_related = ["tenant", "owner"]
    search_fields = ["title", "owner__email", "tenant__name"]
    date_hierarchy = "created_at"
    fields = [
        "title",
        "status",
        "metadata",
        "tenant",
        "owner",
        "channel",
        "participants",
        "last_seq",
        "created_at",
        "updated_at",
    ]
    readonly_fields = ["tenant", "owner", "channel", "participants", "last_seq", "created_at", "updated_at"]
    inlines = [MessageInline]

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        # The form has already set the new values on ``obj``: compare with what is stored.
        stored = Conversation.objects.get(pk=obj.pk)
        editable = ("title", "status", "metadata")
        changes = {name: getattr(obj, name) for name in editable if getattr(stored, name) != getattr(obj, name)}
        services.conversation_update(conversation=obj, user=request.user, as_staff=True, **changes)

    def get_deleted_objects(self, objs, request):
        # A conversation's messages go with it, although they cannot be deleted one by one.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, perms_needed - {Message._meta.verbose_name}, protected

    def delete_model(self, request, obj):
        services.conversation_delete(conversation=obj, user=request.user, as_staff=True)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for conversation in queryset:
                services.conversation_delete(conversation=conversation, user=request.user, as_staff=True)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Messages are the conversation's history in ``seq`` order, already delivered to
    clients and channels: staff can read them and redact one's content (audited, the
    message keeps its place), but not edit, add or delete them. Removing a whole
    conversation is a conversation delete."""

    list_display = ["id", "conversation", "seq", "role", "sender", "status", "created_at"]
    list_filter = ["role", "status"]
    list_select_related = ["conversation", "sender"]
    search_fields = ["content", "client_message_id"]
    date_hierarchy = "created_at"
    actions = ["redact_content"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_redact_permission(self, request):
        # Redaction overwrites content: staff who may only view messages may not redact.
        return request.user.has_perm("conversations.change_message")

    @admin.action(description="Redact content of selected messages (audited)", permissions=["redact"])
    def redact_content(self, request, queryset):
        with transaction.atomic():
            for message in queryset:
                services.message_redact(message=message, actor=request.user)
        self.message_user(request, f"Redacted {len(queryset)} message(s).", messages.SUCCESS)
