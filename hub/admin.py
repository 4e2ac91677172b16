"""The hub in the admin: accounts (never the secret), deliveries with their attempts, and a
re-queue action that calls the same service as ``manage.py retry_failed_deliveries``."""

from django.contrib import admin, messages

from .models import ChannelAccount, Contact, Delivery, DeliveryAttempt
from .services import deliveries


@admin.register(ChannelAccount)
class ChannelAccountAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "channel", "external_id", "tenant", "is_active", "created_at"]
    list_filter = ["channel", "is_active"]
    list_select_related = ["tenant"]
    search_fields = ["name", "external_id", "tenant__name"]
    # The encrypted secret is not a field here at all; the rest is changed over the API.
    fields = ["tenant", "channel", "name", "external_id", "settings", "created_by", "is_active", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ["id", "address", "name", "account", "tenant", "created_at"]
    list_select_related = ["account", "tenant"]
    search_fields = ["address", "name"]
    readonly_fields = ["tenant", "account", "address", "name", "created_at"]

    def has_add_permission(self, request):
        return False


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ["attempt", "connector", "outcome", "error", "latency_ms", "at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.action(description="Re-queue the selected failed deliveries")
def requeue(modeladmin, request, queryset):
    done = [
        d.pk
        for d in queryset.filter(state=Delivery.State.FAILED)
        if deliveries.delivery_requeue(delivery=d, actor=request.user)
    ]
    modeladmin.message_user(request, f"Re-queued {len(done)} deliveries.", messages.SUCCESS)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "message", "account", "contact", "state", "attempts", "last_error", "created_at"]
    list_filter = ["state", "account__channel"]
    list_select_related = ["message", "account", "contact"]
    search_fields = ["external_id", "contact__address"]
    readonly_fields = [
        "tenant",
        "message",
        "account",
        "contact",
        "state",
        "external_id",
        "attempts",
        "claimed_by",
        "claimed_at",
        "pending_since",
        "enqueue_failed_at",
        "last_error",
        "created_at",
        "finished_at",
    ]
    fields = readonly_fields
    inlines = [DeliveryAttemptInline]
    actions = [requeue]

    def has_add_permission(self, request):
        return False
