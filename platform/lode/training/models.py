"""The model registry: the platform-wide base models tenants fine-tune from (weights in the artifact
store, platform scope, Hugging Face format), the tenants' fine-tuned models and the checkpoints of
their fine-tune jobs."""
import uuid

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants.managers import TenantScopedManager


class BaseModelTaskType(models.TextChoices):
    CAUSAL_LM = "causal_lm", "Causal language model"
    SEQUENCE_CLASSIFICATION = "sequence_classification", "Sequence classification"
    TEXT_TO_IMAGE = "text_to_image", "Text to image"


class BaseModelSource(models.TextChoices):
    BUILTIN = "builtin", "Built in"
    UPLOADED = "uploaded", "Uploaded"


class BaseModel(models.Model):
    """One base model: the platform's catalog (tenant empty: every tenant may fine-tune from it),
    or a tenant's own uploaded Hugging Face-format checkpoint (seen by that tenant only)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    name = models.SlugField(max_length=100)
    display_name = models.CharField(max_length=200)
    task_type = models.CharField(max_length=40, choices=BaseModelTaskType.choices)
    # The transformers/diffusers class that loads it, e.g. "GPT2LMHeadModel".
    architecture = models.CharField(max_length=200)
    parameter_count = models.BigIntegerField(validators=[MinValueValidator(0)])
    # Relative key of the folder in the artifact store: platform scope ("base-models/<name>") for the
    # catalog, the tenant's scope ("base-models/<id>") for an upload.
    artifact_prefix = models.CharField(max_length=500)
    # The model folder's lode_model.json: file list with sizes and digests, revision, training record.
    manifest = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=20, choices=BaseModelSource.choices, default=BaseModelSource.BUILTIN)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(task_type__in=BaseModelTaskType.values), name="training_basemodel_task_type_valid"
            ),
            models.CheckConstraint(
                condition=Q(source__in=BaseModelSource.values), name="training_basemodel_source_valid"
            ),
            models.CheckConstraint(condition=Q(parameter_count__gte=0), name="training_basemodel_parameters_gte_0"),
            models.UniqueConstraint(fields=["name"], condition=Q(tenant__isnull=True), name="training_basemodel_platform_name"),
            models.UniqueConstraint(fields=["tenant", "name"], condition=Q(tenant__isnull=False),
                                    name="training_basemodel_tenant_name"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def revision(self) -> str:
        """Digest of the registered files (from the manifest); empty when unknown."""
        return str((self.manifest or {}).get("revision", ""))


class TunedModel(models.Model):
    """A tenant's fine-tuned model: its artifacts in the store (tenant scope, `models/<id>/`), where
    it came from (base model, dataset versions, hyperparameters, job) and how it did (metrics).
    Written once by the fine-tune job that trained it; nothing changes it afterwards but its card."""

    class Method(models.TextChoices):
        LORA = "lora", "LoRA adapter"
        FULL = "full", "Full fine-tune"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    name = models.SlugField(max_length=150)
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="tuned_models")
    task = models.CharField(max_length=30)
    task_type = models.CharField(max_length=40, choices=BaseModelTaskType.choices)
    method = models.CharField(max_length=10, choices=Method.choices)
    architecture = models.CharField(max_length=200)
    parameter_count = models.BigIntegerField(default=0)
    trainable_parameter_count = models.BigIntegerField(default=0)
    # An adapter needs its base model's weights; `merged` models hold the base's weights merged in.
    is_adapter = models.BooleanField(default=False)
    merged = models.BooleanField(default=False)
    artifact_prefix = models.CharField(max_length=500)
    manifest = models.JSONField(default=dict, blank=True)
    train_version = models.ForeignKey("datasets.DatasetVersion", on_delete=models.PROTECT, related_name="+")
    validation_version = models.ForeignKey(
        "datasets.DatasetVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    hyperparameters = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    labels = models.JSONField(default=list, blank=True)  # classification: the label names, in output order
    model_card = models.TextField(blank=True)
    job = models.OneToOneField("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at"], name="training_tuned_tenant_created")]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="training_tunedmodel_name_unique"),
            models.CheckConstraint(condition=Q(method__in=["lora", "full"]), name="training_tunedmodel_method_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class TrainingCheckpoint(models.Model):
    """One checkpoint of a fine-tune job in the store (everything to continue from that step)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    job = models.ForeignKey("core.Job", on_delete=models.CASCADE, related_name="+")
    step = models.PositiveIntegerField()
    key = models.CharField(max_length=500)
    size_bytes = models.BigIntegerField(default=0)
    summary = models.JSONField(default=dict, blank=True)  # epoch, data position, tokens, best validation loss
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        ordering = ["job", "step"]
        constraints = [models.UniqueConstraint(fields=["job", "step"], name="training_checkpoint_job_step_unique")]
