"""Datasets, their uploads and their immutable versions.

A version's rows live in Parquet shards in the artifact store under
`datasets/<dataset_id>/versions/<version_id>/`; the row here holds what describes them. A version
is written once, when its job finishes (status `ready`); nothing changes it afterwards (a trigger
refuses updates of a ready version's content columns)."""
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants.managers import TenantScopedManager

from .schemas import MODALITIES

MODALITY_CHOICES = [(name, name) for name in MODALITIES]


class Dataset(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    modality = models.CharField(max_length=30, choices=MODALITY_CHOICES)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at"], name="datasets_ds_tenant_created")]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="datasets_dataset_name_unique")]

    def __str__(self) -> str:
        return self.name


class Upload(models.Model):
    """A file on its way into a dataset: sent through the API (stored at once) or straight to S3 in
    presigned parts and then completed. Ingesting it makes the dataset's next version."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for its parts"
        STORED = "stored", "Stored"
        INGESTING = "ingesting", "Ingesting"
        INGESTED = "ingested", "Ingested"
        FAILED = "failed", "Failed"
        ABORTED = "aborted", "Aborted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="uploads")
    filename = models.CharField(max_length=255)
    key = models.CharField(max_length=500)
    size = models.BigIntegerField(null=True, blank=True)
    declared_format = models.CharField(max_length=20, blank=True)
    column_mapping = models.JSONField(default=dict, blank=True)
    multipart_upload_id = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    job = models.ForeignKey("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at"], name="datasets_upload_tenant_created")]


class DatasetVersion(models.Model):
    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class Operation(models.TextChoices):
        UPLOAD = "upload", "Upload"
        NORMALISE = "normalise", "Normalise"
        FILTER = "filter", "Filter"
        DEDUP_EXACT = "dedup_exact", "Exact dedup"
        DEDUP_NEAR = "dedup_near", "Near-duplicate removal"
        PII_REDACT = "pii_redact", "PII redaction"
        SPLIT = "split", "Split"
        AUGMENT = "augment", "Augment"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    upload = models.ForeignKey(Upload, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    operation = models.CharField(max_length=30, choices=Operation.choices)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.BUILDING)
    modality = models.CharField(max_length=30, choices=MODALITY_CHOICES)
    schema = models.JSONField(default=dict, blank=True)
    row_count = models.BigIntegerField(default=0)
    shard_count = models.PositiveIntegerField(default=0)
    size_bytes = models.BigIntegerField(default=0)
    content_hash = models.CharField(max_length=64, blank=True)
    report = models.JSONField(default=dict, blank=True, help_text="What the operation did: accepted/rejected rows, clusters, hits.")
    stats = models.JSONField(default=dict, blank=True)
    is_synthetic = models.BooleanField(default=False)
    job = models.ForeignKey("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    ready_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedManager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at"], name="datasets_ver_tenant_created")]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="datasets_version_number_unique"),
            models.CheckConstraint(condition=Q(row_count__gte=0), name="datasets_version_rows_nonnegative"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset_id} v{self.number}"

    @property
    def prefix(self) -> str:
        return f"datasets/{self.dataset_id}/versions/{self.id}/"

    @property
    def images_prefix(self) -> str:
        return f"datasets/{self.dataset_id}/images/{self.id}/"
