"""Shared tables with no domain of their own: jobs (with their events) and stored artifacts."""
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants.managers import TenantScopedManager


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

# The job state machine. "running -> queued" is the reconciler handing a job whose worker died
# to another worker (it resumes from its checkpoint).
JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class Job(models.Model):
    """A unit of background work. The row is the source of truth; the Celery message only says
    "look at job X". Later capabilities (ingest, fine-tune, batch generation) are job kinds."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    kind = models.CharField(max_length=100)
    queue = models.CharField(max_length=40)
    state = models.CharField(max_length=20, choices=JobState.choices, default=JobState.QUEUED)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    # Handler-owned resume state (e.g. the last checkpoint's step and key); kept across attempts.
    checkpoint = models.JSONField(default=dict, blank=True)
    # The usage and cost estimated before the job was admitted (billing's figures).
    estimate = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    error_code = models.CharField(max_length=60, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    dispatch_count = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedManager()

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="core_job_tenant_created"),
            models.Index(fields=["state", "dispatched_at"], name="core_job_state_dispatched"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(progress__gte=0) & Q(progress__lte=1), name="core_job_progress_0_1"),
            models.CheckConstraint(condition=Q(state__in=JobState.values), name="core_job_state_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def eta_seconds(self) -> float | None:
        """Remaining time extrapolated from progress so far; None until there is something to go on."""
        if self.state != JobState.RUNNING or not self.started_at or self.progress <= 0 or self.progress >= 1:
            return None
        elapsed = (timezone.now() - self.started_at).total_seconds()
        return round(elapsed * (1 - self.progress) / self.progress, 1)


class JobEvent(models.Model):
    """What happened to a job, in order: state changes, progress, metrics, log lines."""

    class Kind(models.TextChoices):
        STATE = "state", "State change"
        PROGRESS = "progress", "Progress"
        METRIC = "metric", "Metrics"
        LOG = "log", "Log"

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    message = models.CharField(max_length=1000, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        indexes = [models.Index(fields=["job", "id"], name="core_jobevent_job_id")]

    @property
    def seq(self) -> int:
        return self.id


class Artifact(models.Model):
    """A file a tenant stored through the API; its bytes live in the artifact store (S3)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="artifacts")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    name = models.CharField(max_length=255)
    key = models.CharField(max_length=500, help_text="Relative key in the tenant's artifact prefix.")
    size = models.BigIntegerField()
    content_type = models.CharField(max_length=200, blank=True)
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at"], name="core_artifact_tenant_created")]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="core_artifact_tenant_key_unique"),
            models.CheckConstraint(condition=Q(size__gte=0), name="core_artifact_size_nonnegative"),
        ]

    def __str__(self) -> str:
        return self.name


# The webhook tables belong to the core app; their models live with the rest of the mechanism.
from .webhooks.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint  # noqa: E402,F401
