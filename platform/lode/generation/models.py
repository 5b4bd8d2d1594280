"""Prompt templates and few-shot example sets, owned by a tenant (row-level security). Batch
generation jobs are core jobs (kind `generation.batch`) whose output is a synthetic dataset version;
interactive requests keep no rows (their usage is in billing's ledger)."""
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.managers import TenantScopedManager


class ExampleSet(models.Model):
    """Few-shot examples: each a filling of a template's variables and the output wanted
    (`[{"variables": {...}, "output": "..."}]`)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    name = models.SlugField(max_length=100)
    description = models.TextField(blank=True)
    examples = models.JSONField(default=list)
    version = models.PositiveIntegerField(default=1)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="generation_exampleset_name_unique")]

    def __str__(self) -> str:
        return self.name


class PromptTemplate(models.Model):
    """A named prompt with `{{ variable }}` placeholders, an optional system prompt, defaults, and
    optionally an example set rendered as few-shot turns. Each change raises `version`; what a
    request rendered records the version it used."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    name = models.SlugField(max_length=100)
    description = models.TextField(blank=True)
    system = models.TextField(blank=True)
    template = models.TextField()
    variables = models.JSONField(default=list, help_text="The variables the template uses, in order (derived).")
    defaults = models.JSONField(default=dict, blank=True)
    example_set = models.ForeignKey(ExampleSet, null=True, blank=True, on_delete=models.PROTECT, related_name="templates")
    max_examples = models.PositiveIntegerField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="generation_prompttemplate_name_unique")]

    def __str__(self) -> str:
        return self.name
