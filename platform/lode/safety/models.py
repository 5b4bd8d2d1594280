"""Content safety: each tenant's policy (versioned, never changed in place), the decisions made
under it, and the moderation queue of items waiting for a human. All tenant-owned (row-level
security); platform staff read escalations across tenants through the system role."""
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants.managers import TenantScopedManager

from .detectors.base import CATEGORIES


class Action(models.TextChoices):
    ALLOW = "allow", "Allow"
    FLAG = "flag", "Flag for review"
    BLOCK = "block", "Block"
    REDACT = "redact", "Redact"


class Source(models.TextChoices):
    PROMPT = "prompt", "Prompt"
    OUTPUT = "output", "Model output"
    DATASET_ROW = "dataset_row", "Dataset row"
    IMAGE = "image", "Generated image"
    TRAINING_DATA = "training_data", "Training data"
    CHECK = "check", "Safety check API"


class SafetyPolicy(models.Model):
    """One version of a tenant's policy. A change writes the next version; decisions name the
    version that made them. Version 0 is the platform's default (no row)."""

    class FlaggedOutput(models.TextChoices):
        HOLD = "hold", "Hold until reviewed"
        RETURN = "return", "Return with a flag"

    class ImageReview(models.TextChoices):
        NEVER = "never", "Never"
        ALWAYS = "always", "Always"
        SAMPLED = "sampled", "A sample"
        WHEN_PROMPT_FLAGGED = "when_prompt_flagged", "When the prompt was flagged"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()
    # {category: {"threshold": 0..1, "action": allow|flag|block|redact}}
    rules = models.JSONField(default=dict)
    # [{"kind": term|regex|phrase, "category", "value", "threshold"?}]: the tenant's blocklists and
    # lexicon extensions, part of the version so a decision can be re-derived.
    blocklist = models.JSONField(default=list, blank=True)
    flagged_output = models.CharField(max_length=10, choices=FlaggedOutput.choices, default=FlaggedOutput.HOLD)
    class StreamRelease(models.TextChoices):
        END = "end", "After the output's verdict"
        SENTENCES = "sentences", "Sentence by sentence, each checked"

    stream_release = models.CharField(max_length=10, choices=StreamRelease.choices, default=StreamRelease.END)
    image_review = models.CharField(max_length=20, choices=ImageReview.choices, default=ImageReview.WHEN_PROMPT_FLAGGED)
    image_sample_rate = models.FloatField(default=0.0)
    training_flagged_rate_limit = models.FloatField(default=0.05)
    semantic = models.BooleanField(default=True, help_text="Run the semantic (embedding) blocklist on requests.")
    classifier = models.ForeignKey("training.TunedModel", null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+", help_text="The tenant's own safety classifier, used as a detector.")
    review_sla_minutes = models.PositiveIntegerField(default=240)
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "version"], name="safety_policy_version_unique"),
            models.CheckConstraint(condition=Q(version__gte=1), name="safety_policy_version_positive"),
        ]

    def __str__(self) -> str:
        return f"policy v{self.version}"


class ModerationItem(models.Model):
    """Something a policy flagged, waiting for (or decided by) a human. A held output's text stays
    here until it is released (approved) or purged (rejected)."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        CLAIMED = "claimed", "Claimed"
        ESCALATED = "escalated", "Escalated to platform staff"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=20, choices=Source.choices)
    source_ref = models.CharField(max_length=200, blank=True, help_text="The request, or version and row, it came from.")
    content = models.TextField(blank=True)
    content_key = models.CharField(max_length=500, blank=True, help_text="An image's key in the artifact store.")
    context = models.JSONField(default=dict, blank=True, help_text="The prompt of an output, the model, the template.")
    scores = models.JSONField(default=dict)
    categories = models.JSONField(default=list)
    policy_version = models.PositiveIntegerField()
    held = models.BooleanField(default=False, help_text="Withheld from delivery until a reviewer approves it.")
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    claimed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    claimed_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    escalation_reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    purged_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "state", "due_at"], name="safety_item_queue"),
            models.Index(fields=["state", "due_at"], name="safety_item_escalations"),
        ]

    def __str__(self) -> str:
        return f"{self.source} item {self.id}"

    @property
    def is_open(self) -> bool:
        return self.state in (self.State.PENDING, self.State.CLAIMED, self.State.ESCALATED)


class SafetyDecision(models.Model):
    """What a policy version decided about one text or image. Allowed interactive requests are
    recorded too (their scores are the evidence for an audit); dataset scans record only what
    they did not allow, and count the rest in the version's report."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    policy_version = models.PositiveIntegerField()
    source = models.CharField(max_length=20, choices=Source.choices)
    source_ref = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=10, choices=Action.choices)
    categories = models.JSONField(default=list)
    scores = models.JSONField(default=dict)
    text_sha256 = models.CharField(max_length=64, blank=True)
    item = models.ForeignKey(ModerationItem, null=True, blank=True, on_delete=models.SET_NULL, related_name="decisions")
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at"], name="safety_decision_tenant_created")]


class ReviewDecision(models.Model):
    """A reviewer's decision on an item (the audit trail; the item holds the latest). Reviewed
    items become labeled data for the tenant's own safety classifier."""

    class Verdict(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"
        ESCALATE = "escalate", "Escalate"

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    item = models.ForeignKey(ModerationItem, on_delete=models.CASCADE, related_name="reviews")
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    reason = models.TextField(blank=True)
    # The text decided on, kept as the tenant's labeled example even when the held copy is purged.
    text = models.TextField(blank=True)
    categories = models.JSONField(default=list)
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    as_staff = models.BooleanField(default=False)
    seconds_open = models.FloatField(default=0.0, help_text="From the item's creation to this decision.")
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()


class LexiconTerm(models.Model):
    """A platform-wide lexicon term added by staff (in the admin) to the lexicons the project
    ships; applies to every tenant from the next check. Tenants extend lexicons in their own
    policy's blocklist."""

    class Language(models.TextChoices):
        EN = "en", "English"
        ZH = "zh", "Chinese"

    id = models.BigAutoField(primary_key=True)
    category = models.CharField(max_length=30, choices=[(name, name) for name in CATEGORIES])
    language = models.CharField(max_length=5, choices=Language.choices)
    term = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    note = models.CharField(max_length=300, blank=True)
    added_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["language", "category", "term"], name="safety_lexicon_term_unique")]

    def __str__(self) -> str:
        return f"{self.language}:{self.category}:{self.term}"
