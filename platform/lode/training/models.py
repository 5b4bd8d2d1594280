"""The base-model catalog: the platform-wide models tenants fine-tune from. The weights live in the
artifact store (platform scope) in Hugging Face format; the row says what they are and where."""
import uuid

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone


class BaseModelTaskType(models.TextChoices):
    CAUSAL_LM = "causal_lm", "Causal language model"
    SEQUENCE_CLASSIFICATION = "sequence_classification", "Sequence classification"
    TEXT_TO_IMAGE = "text_to_image", "Text to image"


class BaseModelSource(models.TextChoices):
    BUILTIN = "builtin", "Built in"
    UPLOADED = "uploaded", "Uploaded"


class BaseModel(models.Model):
    """One base model in the catalog. Not tenant-owned: every tenant may fine-tune from it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.SlugField(max_length=100, unique=True)
    display_name = models.CharField(max_length=200)
    task_type = models.CharField(max_length=40, choices=BaseModelTaskType.choices)
    # The transformers/diffusers class that loads it, e.g. "GPT2LMHeadModel".
    architecture = models.CharField(max_length=200)
    parameter_count = models.BigIntegerField(validators=[MinValueValidator(0)])
    # Relative key of the folder in the artifact store, platform scope ("base-models/<name>").
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
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def revision(self) -> str:
        """Digest of the registered files (from the manifest); empty when unknown."""
        return str((self.manifest or {}).get("revision", ""))
