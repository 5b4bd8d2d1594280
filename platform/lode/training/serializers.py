"""Input and output shapes of the training API. No logic: services do the work."""
from rest_framework import serializers

from lode.core.models import Job

from .models import BaseModel, TrainingCheckpoint, TunedModel


class FineTuneInput(serializers.Serializer):
    base_model = serializers.CharField(max_length=100)
    train_version = serializers.CharField(max_length=64)
    validation_version = serializers.CharField(max_length=64, required=False, allow_null=True, allow_blank=True)
    task = serializers.CharField(max_length=40, required=False, allow_null=True, allow_blank=True)
    method = serializers.CharField(max_length=10, required=False, default="lora")
    hyperparameters = serializers.JSONField(required=False, default=dict)
    suffix = serializers.CharField(max_length=40, required=False, default="", allow_blank=True)
    gpus = serializers.JSONField(required=False, default=1)


class FineTuneOutput(serializers.ModelSerializer):
    eta_seconds = serializers.FloatField(read_only=True, allow_null=True)
    base_model = serializers.SerializerMethodField()
    task = serializers.SerializerMethodField()
    method = serializers.SerializerMethodField()
    model_id = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id", "state", "base_model", "task", "method", "params", "estimate", "progress", "progress_message",
            "eta_seconds", "result", "model_id", "error", "error_code", "attempts", "created_at", "started_at",
            "finished_at", "cancel_requested_at",
        ]
        read_only_fields = fields

    def get_base_model(self, job) -> str:
        return job.params.get("base_model", "")

    def get_task(self, job) -> str:
        return job.params.get("task", "")

    def get_method(self, job) -> str:
        return job.params.get("method", "")

    def get_model_id(self, job) -> str | None:
        return (job.result or {}).get("model_id")


class CheckpointOutput(serializers.ModelSerializer):
    class Meta:
        model = TrainingCheckpoint
        fields = ["id", "step", "size_bytes", "summary", "created_at"]
        read_only_fields = fields


class BaseModelOutput(serializers.ModelSerializer):
    owned = serializers.SerializerMethodField()

    class Meta:
        model = BaseModel
        fields = ["id", "name", "display_name", "task_type", "architecture", "parameter_count", "source", "owned",
                  "revision", "created_at"]
        read_only_fields = fields

    def get_owned(self, model) -> bool:
        """True for the tenant's own upload, False for the platform's catalog."""
        return model.tenant_id is not None


class BaseModelUploadInput(serializers.Serializer):
    file = serializers.FileField()
    name = serializers.CharField(max_length=100)
    display_name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class TunedModelOutput(serializers.ModelSerializer):
    base_model = serializers.CharField(source="base_model.name", read_only=True)
    job = serializers.UUIDField(source="job_id", read_only=True)
    train_version = serializers.UUIDField(source="train_version_id", read_only=True)
    validation_version = serializers.UUIDField(source="validation_version_id", read_only=True, allow_null=True)

    class Meta:
        model = TunedModel
        fields = [
            "id", "name", "base_model", "task", "task_type", "method", "architecture", "parameter_count",
            "trainable_parameter_count", "is_adapter", "merged", "train_version", "validation_version",
            "hyperparameters", "metrics", "labels", "job", "created_at",
        ]
        read_only_fields = fields
