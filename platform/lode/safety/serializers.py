"""Input and output shapes of the safety API. No logic: policies, checks and moderation do the work."""
import difflib
from collections.abc import Mapping

from rest_framework import serializers

from .models import ModerationItem, ReviewDecision, SafetyPolicy


class StrictInput(serializers.Serializer):
    """An input that refuses keys it does not declare (a 400 naming each), rather than dropping them."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: [_unknown_field(key, self.fields)] for key in unknown})
        return super().to_internal_value(data)


def _unknown_field(key, fields) -> str:
    close = difflib.get_close_matches(str(key), list(fields), n=1)
    return f"Unknown field{f' (did you mean {close[0]}?)' if close else ''}."


class PolicyInput(StrictInput):
    """The whole policy (PUT): a field left out takes its default, so a misspelt one is refused
    rather than silently resetting the setting it meant."""

    rules = serializers.JSONField(required=False, default=dict)
    blocklist = serializers.JSONField(required=False, default=list)
    flagged_output = serializers.ChoiceField(choices=SafetyPolicy.FlaggedOutput.choices, required=False, default="hold")
    stream_release = serializers.ChoiceField(choices=SafetyPolicy.StreamRelease.choices, required=False, default="end")
    image_review = serializers.ChoiceField(choices=SafetyPolicy.ImageReview.choices, required=False,
                                           default="when_prompt_flagged")
    image_sample_rate = serializers.FloatField(required=False, default=0.0, min_value=0.0, max_value=1.0)
    training_flagged_rate_limit = serializers.FloatField(required=False, default=0.05, min_value=0.0, max_value=1.0)
    semantic = serializers.BooleanField(required=False, default=True)
    classifier = serializers.CharField(required=False, allow_null=True, allow_blank=True, default=None, max_length=150)
    review_sla_minutes = serializers.IntegerField(required=False, default=240, min_value=1, max_value=60 * 24 * 30)
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class PolicyOutput(serializers.Serializer):
    version = serializers.IntegerField()
    rules = serializers.DictField()
    blocklist = serializers.ListField()
    flagged_output = serializers.CharField()
    stream_release = serializers.CharField()
    image_review = serializers.CharField()
    image_sample_rate = serializers.FloatField()
    training_flagged_rate_limit = serializers.FloatField()
    semantic = serializers.BooleanField()
    classifier = serializers.CharField(allow_null=True)
    review_sla_minutes = serializers.IntegerField()
    note = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField(allow_null=True)


class CheckInput(serializers.Serializer):
    input = serializers.JSONField(help_text="A text or a list of up to 256 texts.")
    source = serializers.ChoiceField(choices=["prompt", "output", "check"], required=False, default="check")
    full = serializers.BooleanField(required=False, default=True, help_text="Run the semantic blocklist too.")


class ReviewOutput(serializers.ModelSerializer):
    reviewer = serializers.SlugRelatedField(slug_field="email", read_only=True)

    class Meta:
        model = ReviewDecision
        fields = ["verdict", "reason", "reviewer", "as_staff", "seconds_open", "created_at"]
        read_only_fields = fields


class ItemOutput(serializers.ModelSerializer):
    claimed_by = serializers.SlugRelatedField(slug_field="email", read_only=True)
    decided_by = serializers.SlugRelatedField(slug_field="email", read_only=True)
    sla_seconds_left = serializers.SerializerMethodField()

    class Meta:
        model = ModerationItem
        fields = ["id", "source", "source_ref", "state", "categories", "scores", "policy_version", "held", "claimed_by",
                  "claimed_at", "escalated_at", "escalation_reason", "decided_by", "decided_at", "reason", "released_at",
                  "purged_at", "due_at", "sla_seconds_left", "created_at"]
        read_only_fields = fields

    def get_sla_seconds_left(self, item) -> float | None:
        from django.utils import timezone

        return round((item.due_at - timezone.now()).total_seconds(), 1) if item.is_open else None


class ItemDetailOutput(ItemOutput):
    content = serializers.SerializerMethodField()
    context = serializers.JSONField(read_only=True)
    reviews = ReviewOutput(many=True, read_only=True)
    tenant = serializers.SerializerMethodField()

    class Meta(ItemOutput.Meta):
        fields = ItemOutput.Meta.fields + ["content", "context", "reviews", "tenant"]
        read_only_fields = fields

    def get_content(self, item) -> dict:
        from .moderation import item_content

        return item_content(item)

    def get_tenant(self, item) -> str:
        return str(item.tenant_id)


class ClaimInput(serializers.Serializer):
    count = serializers.JSONField(required=False, default=1)


class DecisionInput(serializers.Serializer):
    verdict = serializers.CharField(max_length=20)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class BulkDecisionInput(DecisionInput):
    items = serializers.JSONField()


class ReviewExportInput(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
