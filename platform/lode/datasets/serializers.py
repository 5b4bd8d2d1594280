"""Input and output shapes of the datasets API. No logic: services and selectors do the work."""
from rest_framework import serializers

from .models import Dataset, DatasetVersion, Upload
from .operations_spec import KNOWN
from .schemas import MODALITIES
from .services import FORMATS


class DatasetInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    modality = serializers.ChoiceField(choices=sorted(MODALITIES))
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class DatasetOutput(serializers.ModelSerializer):
    class Meta:
        model = Dataset
        fields = ["id", "name", "description", "modality", "created_at"]
        read_only_fields = fields


class VersionOutput(serializers.ModelSerializer):
    dataset_id = serializers.UUIDField(read_only=True)
    parent_id = serializers.UUIDField(read_only=True, allow_null=True)
    job_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = DatasetVersion
        fields = ["id", "dataset_id", "number", "parent_id", "operation", "params", "status", "modality", "schema",
                  "row_count", "shard_count", "size_bytes", "content_hash", "is_synthetic", "report", "stats", "job_id",
                  "created_at", "ready_at"]
        read_only_fields = fields


class VersionSummaryOutput(VersionOutput):
    class Meta(VersionOutput.Meta):
        fields = [name for name in VersionOutput.Meta.fields if name not in ("report", "stats", "schema")]
        read_only_fields = fields


class UploadInput(serializers.Serializer):
    file = serializers.FileField()
    format = serializers.ChoiceField(choices=FORMATS, required=False, allow_blank=True)
    column_mapping = serializers.JSONField(required=False)


class UploadOutput(serializers.ModelSerializer):
    dataset_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = Upload
        fields = ["id", "dataset_id", "filename", "size", "declared_format", "column_mapping", "status", "error", "created_at"]
        read_only_fields = fields


class MultipartStartInput(serializers.Serializer):
    filename = serializers.CharField(max_length=255)
    size = serializers.IntegerField(min_value=1)
    part_count = serializers.IntegerField(min_value=1)
    format = serializers.ChoiceField(choices=FORMATS, required=False, allow_blank=True)
    column_mapping = serializers.JSONField(required=False)


class PartInput(serializers.Serializer):
    part_number = serializers.IntegerField(min_value=1)
    etag = serializers.CharField(max_length=200)


class MultipartCompleteInput(serializers.Serializer):
    parts = PartInput(many=True, allow_empty=False)


class OperationInput(serializers.Serializer):
    operation = serializers.CharField(max_length=40, help_text="normalise, filter, dedup_exact, dedup_near, pii_redact, split, augment, safety_filter")
    params = serializers.DictField(required=False, default=dict)
