"""The messaging hub's data: channel accounts, contacts, the binding of a conversation to a
contact, outbound deliveries with their attempts, status history, and inbound message ids."""

from django.conf import settings as django_settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import TenantOwnedModel
from conversations.models import Conversation, Message


class ChannelAccount(TenantOwnedModel):
    """A tenant's account on one channel. ``external_id`` is what inbound payloads name (the
    WhatsApp phone-number id, the Instagram account id), so it is unique per channel among
    connected accounts across tenants. The secret signs both ways and is stored encrypted."""

    class Channel(models.TextChoices):
        WHATSAPP = "whatsapp", "WhatsApp"
        INSTAGRAM = "instagram", "Instagram"
        WEBHOOK = "webhook", "Outbound webhook"

    channel = models.CharField(max_length=20, choices=Channel.choices)
    name = models.CharField(max_length=200)
    external_id = models.CharField(max_length=100)
    settings = models.JSONField(default=dict, blank=True)
    # Fernet token of the signing secret (hub.secrets); never shown after creation.
    secret_encrypted = models.TextField(editable=False)
    # Whose name the agent answers in (channel conversations are owned by this user).
    created_by = models.ForeignKey(django_settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # False once disconnected (deleted over the API): kept for the history of its messages.
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "external_id"], condition=Q(is_active=True), name="hub_account_external_unique"
            )
        ]
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="hub_account_recent")]

    def __str__(self) -> str:
        return f"{self.get_channel_display()}: {self.name}"

    @property
    def agent_enabled(self) -> bool:
        return bool(self.settings.get("agent_enabled", True))


class Contact(TenantOwnedModel):
    account = models.ForeignKey(ChannelAccount, on_delete=models.CASCADE, related_name="contacts")
    # The platform's address: a phone number (WhatsApp), an IGSID (Instagram), any id (webhook).
    address = models.CharField(max_length=100)
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "address"], name="hub_contact_address_unique")]

    def __str__(self) -> str:
        return self.name or self.address


class ConversationBinding(TenantOwnedModel):
    """A conversation bound to a contact on an account. At most one OPEN binding per
    contact (the database holds it): a closed conversation's binding is closed, and the
    contact's next message opens a new conversation."""

    conversation = models.OneToOneField(Conversation, on_delete=models.CASCADE, related_name="hub_binding")
    account = models.ForeignKey(ChannelAccount, on_delete=models.CASCADE, related_name="bindings")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="bindings")
    is_open = models.BooleanField(default=True)
    # The agent answers the contact's messages (and its reply is routed to the contact).
    agent_enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["contact"], condition=Q(is_open=True), name="hub_one_open_binding")
        ]

    def __str__(self) -> str:
        return f"conversation {self.conversation_id} with contact {self.contact_id}"


class Delivery(TenantOwnedModel):
    """One outbound message on its way to a connector: the worker's claim and lease, the
    attempt count, and the platform's id of the message (ours, made up front, so a repeated
    send names the same message)."""

    class State(models.TextChoices):
        PENDING = "pending", "Waiting for a worker"
        SENDING = "sending", "Being sent"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="hub_delivery")
    account = models.ForeignKey(ChannelAccount, on_delete=models.CASCADE, related_name="deliveries")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="deliveries")
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    external_id = models.CharField(max_length=120, unique=True)
    attempts = models.PositiveIntegerField(default=0)
    claimed_by = models.CharField(max_length=120, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # When it last went back to waiting (a retry, the sweep): the stale sweep's clock.
    pending_since = models.DateTimeField(default=timezone.now)
    # The broker refused the hand-over: the sweep relays it.
    enqueue_failed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["state", "pending_since"], name="hub_delivery_state")]

    def __str__(self) -> str:
        return f"delivery {self.pk} of message {self.message_id} ({self.state})"


class DeliveryAttempt(models.Model):
    class Outcome(models.TextChoices):
        SENT = "sent", "Sent"
        RETRY = "retry", "Transient error, retried"
        FAILED = "failed", "Permanent error"
        LOST = "lost", "Worker lost mid-send"

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_rows")
    attempt = models.PositiveIntegerField()
    connector = models.CharField(max_length=40)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    error = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["delivery_id", "at", "id"]

    def __str__(self) -> str:
        return f"attempt {self.attempt} of delivery {self.delivery_id}: {self.outcome}"


class MessageStatusChange(models.Model):
    """Every move of an outbound message's status, with its time."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="hub_status_changes")
    status = models.CharField(max_length=20, choices=Message.Status.choices)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["message_id", "at", "id"]

    def __str__(self) -> str:
        return f"message {self.message_id} {self.status} at {self.at:%Y-%m-%d %H:%M:%S}"


class InboundMessage(models.Model):
    """A platform's message id seen on an inbound webhook: platforms retry, we store once."""

    account = models.ForeignKey(ChannelAccount, on_delete=models.CASCADE, related_name="inbound")
    external_id = models.CharField(max_length=200)
    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="hub_inbound")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "external_id"], name="hub_inbound_unique")]

    def __str__(self) -> str:
        return f"{self.external_id} -> message {self.message_id}"
