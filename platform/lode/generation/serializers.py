"""Input and output shapes of Lode's own generation API (prompt templates, example sets, batch
generation jobs). No logic: prompts.py and batch.py do the work."""
from rest_framework import serializers

from lode.core.models import Job

from .models import ExampleSet, PromptTemplate


class ExampleSetOutput(serializers.ModelSerializer):
    class Meta:
        model = ExampleSet
        fields = ["id", "name", "description", "examples", "version", "created_at", "updated_at"]
        read_only_fields = fields


class PromptTemplateOutput(serializers.ModelSerializer):
    example_set = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = PromptTemplate
        fields = ["id", "name", "description", "system", "template", "variables", "defaults", "example_set",
                  "max_examples", "version", "created_at", "updated_at"]
        read_only_fields = fields


class TemplateRenderInput(serializers.Serializer):
    variables = serializers.JSONField(required=False, default=dict)
    example_set = serializers.CharField(required=False, allow_null=True, max_length=100)
    max_examples = serializers.JSONField(required=False, allow_null=True, default=None)


class TemplateRenderOutput(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField()
    messages = serializers.ListField(child=serializers.DictField())
    prompt = serializers.CharField()


class GenerationJobInput(serializers.Serializer):
    model = serializers.CharField(max_length=150)
    version = serializers.CharField(max_length=64, help_text="The dataset version to generate over (one output per row).")
    template = serializers.JSONField(required=False, allow_null=True, default=None,
                                     help_text="A template name or {name, example_set, max_examples}; rows fill its variables.")
    input_field = serializers.CharField(required=False, allow_null=True, allow_blank=True, default=None, max_length=100,
                                        help_text="Without a template: the row field that is the prompt.")
    output_field = serializers.CharField(required=False, default="generated", max_length=100)
    params = serializers.DictField(required=False, default=dict,
                                   help_text="Sampling parameters: max_tokens, temperature, top_p, top_k, "
                                             "repetition_penalty, stop, seed.")


class GenerationJobOutput(serializers.ModelSerializer):
    eta_seconds = serializers.FloatField(read_only=True, allow_null=True)
    model = serializers.SerializerMethodField()
    source_version = serializers.SerializerMethodField()
    output_version = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = ["id", "state", "model", "source_version", "output_version", "params", "estimate", "progress",
                  "progress_message", "eta_seconds", "result", "error", "error_code", "attempts", "created_at",
                  "started_at", "finished_at", "cancel_requested_at"]
        read_only_fields = fields

    def get_model(self, job) -> str:
        return job.params.get("model", {}).get("name", "")

    def get_source_version(self, job) -> str:
        return job.params.get("source_version_id", "")

    def get_output_version(self, job) -> str:
        return job.params.get("version_id", "")
