"""Webhook endpoints (where a tenant wants its events) and deliveries (one event to one endpoint,
with its attempts). Both are tenant-owned and under row-level security (core migration 0005)."""
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from lode.core import sealing
from tenants.managers import TenantScopedManager


class WebhookEndpoint(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=300, blank=True)
    # Event type names from the registry, or ["*"] for all of them.
    event_types = models.JSONField(default=list)
    # The signing secret signs every delivery, so it must be readable (unlike API keys, which are
    # hashed): it is stored sealed (lode.core.sealing), bound to this row; read and set it through
    # `secret`. Row-level security guards the row; the API shows the secret only when it is
    # created or rotated.
    secret_sealed = models.TextField()
    # After a rotation the old secret still signs (a second v1) until this moment, so receivers
    # can switch over without dropping deliveries.
    previous_secret_sealed = models.TextField(blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at"], name="core_whendpoint_tenant_created")]

    def __str__(self) -> str:
        return self.url

    def _context(self, field: str) -> str:
        return f"webhook_endpoint:{self.id}:{field}"

    @property
    def secret(self) -> str:
        return sealing.unseal(self.secret_sealed, context=self._context("secret"))

    @secret.setter
    def secret(self, plain: str) -> None:
        self.secret_sealed = sealing.seal(plain, context=self._context("secret"))

    @property
    def previous_secret(self) -> str:
        if not self.previous_secret_sealed:
            return ""
        return sealing.unseal(self.previous_secret_sealed, context=self._context("previous_secret"))

    @previous_secret.setter
    def previous_secret(self, plain: str) -> None:
        self.previous_secret_sealed = sealing.seal(plain, context=self._context("previous_secret")) if plain else ""

    def signing_secrets(self, *, now=None) -> list[str]:
        """The secrets a delivery is signed with now: the current one, and the previous one while
        its grace period lasts."""
        now = now or timezone.now()
        secrets = [self.secret]
        if self.previous_secret_sealed and self.previous_secret_expires_at and self.previous_secret_expires_at > now:
            secrets.append(self.previous_secret)
        return secrets


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event for one endpoint. The row is the source of truth; a Celery message only says
    "attempt delivery X now" and is ignored when the row says otherwise."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.CharField(max_length=40)
    event_type = models.CharField(max_length=100)
    payload = models.JSONField()
    status = models.CharField(max_length=20, choices=WebhookDeliveryStatus.choices, default=WebhookDeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    # The first 500 characters of the last response's body; never more.
    last_response_body = models.CharField(max_length=500, blank=True)
    response_time_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedManager()

    class Meta:
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="core_webhookdel_endp_created"),
            models.Index(fields=["status", "next_attempt_at"], name="core_webhookdel_status_next"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="core_webhookdel_endpoint_event_unique"),
            models.CheckConstraint(condition=Q(status__in=WebhookDeliveryStatus.values), name="core_webhookdel_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} → {self.endpoint_id} ({self.status})"
