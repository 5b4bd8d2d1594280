"""Input and output shapes of the core API. No logic: services do the work."""
from rest_framework import serializers

from .models import Artifact, Job, JobEvent


class JobCreateInput(serializers.Serializer):
    kind = serializers.CharField(max_length=100)
    params = serializers.DictField(required=False, default=dict)


class JobOutput(serializers.ModelSerializer):
    eta_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = [
            "id", "kind", "queue", "state", "params", "estimate", "result", "progress", "progress_message", "eta_seconds",
            "error", "error_code", "attempts", "created_at", "dispatched_at", "started_at", "finished_at",
            "cancel_requested_at",
        ]
        read_only_fields = fields


class JobEventOutput(serializers.ModelSerializer):
    class Meta:
        model = JobEvent
        fields = ["id", "kind", "message", "data", "created_at"]
        read_only_fields = fields


class JobKindOutput(serializers.Serializer):
    name = serializers.CharField()
    queue = serializers.CharField()
    description = serializers.CharField()
    time_limit_seconds = serializers.IntegerField()


class ArtifactUploadInput(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)


class ArtifactOutput(serializers.ModelSerializer):
    class Meta:
        model = Artifact
        fields = ["id", "name", "size", "content_type", "sha256", "created_at"]
        read_only_fields = fields


class ArtifactDownloadOutput(serializers.Serializer):
    url = serializers.URLField()
    expires_in = serializers.IntegerField()
