from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import TenantOwnedModel

MAX_MESSAGE_CHARS = 10_000


class Conversation(TenantOwnedModel):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ARCHIVED = "archived", "Archived"
        CLOSED = "closed", "Closed"

    class Channel(models.TextChoices):
        API = "api", "API / web"
        WHATSAPP = "whatsapp", "WhatsApp"
        INSTAGRAM = "instagram", "Instagram"
        WEBHOOK = "webhook", "Outbound webhook"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    participants = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="participating_conversations", blank=True
    )
    title = models.CharField(max_length=200, blank=True)
    channel = models.CharField(max_length=20, choices=Channel.choices, default=Channel.API)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    metadata = models.JSONField(default=dict, blank=True)
    # The seq of the newest message; bumped under a row lock in the message's transaction.
    last_seq = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "owner", "-created_at", "-id"], name="conv_owner_recent"),
            models.Index(fields=["tenant", "status"], name="conv_tenant_status"),
            models.Index(fields=["tenant", "channel"], name="conv_tenant_channel"),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(TenantOwnedModel):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"
        TOOL = "tool", "Tool"
        SYSTEM = "system", "System"

    class Status(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        QUEUED = "queued", "Queued"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        READ = "read", "Read"
        FAILED = "failed", "Failed"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    # Strictly increasing, gapless per conversation (allocated from Conversation.last_seq).
    seq = models.PositiveBigIntegerField()
    role = models.CharField(max_length=20, choices=Role.choices)
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    content = models.TextField()
    # [{"name", "arguments", "result"}] for an assistant reply that used tools.
    tool_calls = models.JSONField(default=list, blank=True)
    attachments = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DELIVERED)
    # A client's own id for the message: resending it does not store it twice.
    client_message_id = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001 - NULL = none, unique when set
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["conversation_id", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_seq_unique"),
            models.UniqueConstraint(
                fields=["conversation", "client_message_id"],
                condition=Q(client_message_id__isnull=False),
                name="message_client_id_unique",
            ),
            models.CheckConstraint(condition=Q(seq__gte=1), name="message_seq_positive"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.role}: {self.content[:40]}"
