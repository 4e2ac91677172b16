from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.models import User
from config.admin_tools import ReadOnlyAdminMixin, excerpt, seconds

from . import exports, services
from .models import Conversation, Message

# Inlines that apps above this one add to the conversation page (chat adds its runs, the
# hub its deliveries) without this module importing them: see ``conversation_inline_add``.
_extra_inlines: list[type[admin.options.InlineModelAdmin]] = []


def conversation_inline_add(inline: type[admin.options.InlineModelAdmin]) -> None:
    """Shows ``inline`` on the conversation change page, after the messages."""
    if inline not in _extra_inlines:
        _extra_inlines.append(inline)


class MessageInline(admin.TabularInline):
    """The conversation's history, read-only, in ``seq`` order."""

    model = Message
    fields = ["seq", "role", "sender", "content_excerpt", "status", "created", "read"]
    readonly_fields = fields
    ordering = ["seq"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("sender")

    @admin.display(description="content")
    def content_excerpt(self, obj):
        return excerpt(obj.content)

    @admin.display(description="created")
    def created(self, obj):
        return seconds(obj.created_at)

    @admin.display(description="read at")
    def read(self, obj):
        return seconds(obj.read_at)


class ConversationForm(forms.ModelForm):
    """Only users of the conversation's own tenant can be chosen as participants; any
    other id posted is refused by the field ("Select a valid choice")."""

    class Meta:
        model = Conversation
        fields = ["title", "status", "metadata", "participants"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "participants" in self.fields:
            tenant_id = self.instance.tenant_id if self.instance.pk else None
            self.fields["participants"].queryset = User.objects.filter(tenant_id=tenant_id).order_by("email")


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    """Staff change what the API lets an owner change (title, status, metadata) and who
    takes part (users of the same tenant only), and delete conversations, through the same
    services, so every write is validated and audited on the conversation's tenant trail
    with the staff user as actor. Conversations are started by their users (API, channels),
    not created here: "Add conversation" is not offered."""

    form = ConversationForm
    list_display = ["id", "title", "tenant", "owner", "channel", "status", "last_seq", "created", "updated"]
    list_filter = ["status", "channel", "tenant", "created_at"]
    list_select_related = ["tenant", "owner"]
    search_fields = ["=id", "title", "owner__email", "tenant__name", "tenant__slug"]
    date_hierarchy = "created_at"
    # Newest first by primary key: the index every table has (created_at has none alone).
    ordering = ["-id"]
    show_full_result_count = False
    actions = ["close_conversations", "export_conversations"]
    fields = [
        "title",
        "status",
        "metadata",
        "participants",
        "tenant",
        "owner",
        "channel",
        "last_seq",
        "created",
        "updated",
        "messages_link",
    ]
    readonly_fields = ["tenant", "owner", "channel", "last_seq", "created", "updated", "messages_link"]
    filter_horizontal = ["participants"]
    inlines = [MessageInline]

    def get_inlines(self, request, obj):
        return [*self.inlines, *_extra_inlines]

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return seconds(obj.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj):
        return seconds(obj.updated_at)

    @admin.display(description="messages")
    def messages_link(self, obj):
        url = reverse("admin:conversations_message_changelist") + f"?conversation={obj.pk}"
        return format_html('<a href="{}">{} message(s) in the message list</a>', url, obj.last_seq)

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        # The form has already set the new values on ``obj``: compare with what is stored.
        stored = Conversation.objects.get(pk=obj.pk)
        editable = ("title", "status", "metadata")
        changes = {name: getattr(obj, name) for name in editable if getattr(stored, name) != getattr(obj, name)}
        services.conversation_update(conversation=obj, user=request.user, as_staff=True, **changes)

    def save_related(self, request, form, formsets, change):
        # Participants go through the service (tenant-checked, audited), not form.save_m2m().
        # The form's queryset has already refused users of other tenants; the service checks
        # again (and would roll the whole save back).
        if "participants" in form.cleaned_data:
            services.conversation_participants_set(
                conversation=form.instance,
                user=request.user,
                participant_ids=[user.pk for user in form.cleaned_data["participants"]],
                as_staff=True,
            )
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

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

    @admin.action(description="Close selected conversations (audited)", permissions=["change"])
    def close_conversations(self, request, queryset):
        closed = 0
        with transaction.atomic():
            for conversation in queryset.exclude(status=Conversation.Status.CLOSED):
                services.conversation_update(
                    conversation=conversation, user=request.user, as_staff=True, status=Conversation.Status.CLOSED
                )
                closed += 1
        self.message_user(request, f"Closed {closed} conversation(s).", messages.SUCCESS)

    @admin.action(description="Export selected conversations (JSON Lines)", permissions=["view"])
    def export_conversations(self, request, queryset):
        """One line per conversation, each the document ``GET .../export?format=json``
        gives; recorded as ``conversation.exported`` on each conversation's trail."""
        conversations = list(queryset.select_related("tenant", "owner").prefetch_related("participants"))
        lines = []
        with transaction.atomic():
            for conversation in conversations:
                messages_ = conversation.messages.order_by("seq").select_related("sender")
                lines.append(exports.conversation_jsonl_line(conversation=conversation, messages=messages_))
                services.conversation_export_recorded(conversation=conversation, actor=request.user, via="admin")
        response = HttpResponse("".join(lines), content_type="application/x-ndjson; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="conversations-{stamp}.jsonl"'
        return response


class ConversationFilter(admin.SimpleListFilter):
    """``?conversation=<id>``: one conversation's messages (linked from its page). Only the
    chosen conversation is listed as a choice, so the filter costs one query however many
    conversations there are."""

    title = "conversation"
    parameter_name = "conversation"

    def lookups(self, request, model_admin):
        value = self.value()
        if value and value.isdigit():
            conversation = Conversation.objects.filter(pk=int(value)).first()
            if conversation is not None:
                return [(value, f"#{conversation.pk} {conversation}")]
        return []

    def has_output(self):
        return True

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(conversation_id=int(value))


@admin.register(Message)
class MessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Messages are the conversation's history in ``seq`` order, already delivered to
    clients and channels: staff can read them and redact one's content (audited, the
    message keeps its place), but not edit, add or delete them. Removing a whole
    conversation is a conversation delete."""

    list_display = ["id", "conversation", "tenant", "seq", "role", "sender", "content_excerpt", "status", "created"]
    list_filter = [ConversationFilter, "tenant", "role", "status", "created_at"]
    list_select_related = ["conversation", "sender", "tenant"]
    search_fields = ["content", "client_message_id"]
    date_hierarchy = "created_at"
    ordering = ["-id"]
    show_full_result_count = False
    actions = ["redact_content"]
    readonly_fields = ["created", "read"]

    @admin.display(description="content")
    def content_excerpt(self, obj):
        return excerpt(obj.content)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return seconds(obj.created_at)

    @admin.display(description="read at", ordering="read_at")
    def read(self, obj):
        return seconds(obj.read_at)

    def has_redact_permission(self, request):
        # Redaction overwrites content: staff who may only view messages may not redact.
        return request.user.has_perm("conversations.change_message")

    @admin.action(description="Redact content of selected messages (audited)", permissions=["redact"])
    def redact_content(self, request, queryset):
        with transaction.atomic():
            for message in queryset:
                services.message_redact(message=message, actor=request.user)
        self.message_user(request, f"Redacted {len(queryset)} message(s).", messages.SUCCESS)
