from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import TenantOwnedModel


class Task(TenantOwnedModel):
    """A user's to-do item: what the agent's tools act on, also exposed at /api/v1/tasks."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=500)
    completed = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "completed", "-created_at"], name="task_owner_state")]

    def __str__(self) -> str:
        return self.title


class AgentRun(TenantOwnedModel):
    """One agent turn: what the model was asked, the tools it called and what it answered."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="runs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    trigger_message = models.ForeignKey(
        "conversations.Message", on_delete=models.CASCADE, related_name="triggered_runs"
    )
    reply_message = models.ForeignKey(
        "conversations.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    provider = models.CharField(max_length=40)
    model = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    tool_calls = models.JSONField(default=list, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Who holds a running run: the Celery task id (a redelivered task keeps it) or one
    # request's own id. Nobody else may run, finish or fail it until its lease lapses.
    claimed_by = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # When it last went into the queue (created or re-queued); the sweep looks at this.
    queued_at = models.DateTimeField(default=timezone.now)
    # Set when handing the run to the broker failed (Redis down at enqueue): the stored run
    # is the outbox, and the relay (chat.tasks.relay_unsent_runs) hands it over later.
    enqueue_failed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["conversation", "-created_at", "-id"], name="run_conv_recent"),
            models.Index(fields=["status", "started_at"], name="run_status_started"),
            models.Index(fields=["status", "queued_at"], name="run_status_queued"),
            models.Index(
                fields=["enqueue_failed_at"], condition=models.Q(enqueue_failed_at__isnull=False), name="run_unsent"
            ),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.status})"
