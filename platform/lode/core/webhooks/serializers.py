"""Input and output shapes of the webhooks API. No logic: services do the work."""
from rest_framework import serializers

from .models import WebhookDelivery, WebhookEndpoint


class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF's CharField would turn 42 into "42"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """true or false, not "yes" or 1."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class WebhookEndpointCreateInput(serializers.Serializer):
    url = StrictCharField(max_length=2000, trim_whitespace=False,
                          help_text="https URL of the receiver; it must resolve to public addresses only.")
    events = serializers.ListField(child=StrictCharField(max_length=100), allow_empty=False,
                                   help_text='Event types to receive, or ["*"] for all (see /webhooks/event-types).')
    description = StrictCharField(max_length=300, allow_blank=True, required=False, default="")
    active = StrictBooleanField(required=False, default=True)


class WebhookEndpointUpdateInput(serializers.Serializer):
    url = StrictCharField(max_length=2000, trim_whitespace=False, required=False)
    events = serializers.ListField(child=StrictCharField(max_length=100), allow_empty=False, required=False)
    description = StrictCharField(max_length=300, allow_blank=True, required=False)
    active = StrictBooleanField(required=False)


class WebhookSecretRotateInput(serializers.Serializer):
    previous_secret_valid_seconds = serializers.IntegerField(
        min_value=0, max_value=7 * 24 * 3600, required=False,
        help_text="How long the old secret keeps signing (as a second v1); 0 ends it now. Default 24 h.",
    )


class WebhookEndpointOutput(serializers.ModelSerializer):
    events = serializers.ListField(source="event_types", child=serializers.CharField())
    active = serializers.BooleanField(source="is_active")

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "description", "events", "active", "previous_secret_expires_at", "created_at", "updated_at"]
        read_only_fields = fields


class WebhookEndpointWithSecretOutput(WebhookEndpointOutput):
    secret = serializers.CharField(help_text="Shown only now: store it to verify the Lode-Signature header.")

    class Meta(WebhookEndpointOutput.Meta):
        fields = [*WebhookEndpointOutput.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookDeliveryOutput(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id", "endpoint_id", "event_id", "event_type", "status", "attempts", "next_attempt_at", "last_attempt_at",
            "last_status_code", "last_error", "last_response_body", "response_time_ms", "created_at", "delivered_at",
            "payload",
        ]
        read_only_fields = fields


class WebhookEventTypeOutput(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
