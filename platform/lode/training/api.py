"""Training API: fine-tune jobs (create with an estimate, follow, events, checkpoints, cancel) and
the model registry (the platform's base models, the tenant's fine-tuned models and their cards)."""
from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from lode.core.errors import ValidationFailed
from lode.core.models import Job, JobEvent, JobState
from lode.core.pagination import SequenceCursorPagination
from lode.core.serializers import JobEventOutput
from tenants.context import current_access
from tenants.scoping import TenantScopedMixin

from . import selectors, services
from .models import BaseModel, TrainingCheckpoint, TunedModel
from .serializers import BaseModelOutput, CheckpointOutput, FineTuneInput, FineTuneOutput, TunedModelOutput


def _actor(request):
    access = current_access(request)
    return access.api_key or access.user


class TrainingApiMixin(TenantScopedMixin):
    required_area = "training"


class FineTuneListCreateApi(TrainingApiMixin, generics.GenericAPIView):
    serializer_class = FineTuneOutput

    def safely_get_queryset(self):
        jobs = Job.objects.filter(kind=services.FINETUNE_KIND)
        state = self.request.query_params.get("state")
        if state:
            if state not in JobState.values:
                raise ValidationFailed(f"state: one of {', '.join(JobState.values)}", details={"field": "state"})
            jobs = jobs.filter(state=state)
        return jobs

    @extend_schema(parameters=[OpenApiParameter("state", str, enum=JobState.values)], responses=FineTuneOutput(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(FineTuneOutput(page, many=True).data)

    @extend_schema(request=FineTuneInput, responses={202: FineTuneOutput})
    def post(self, request):
        data = FineTuneInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        job = services.finetune_create(
            tenant_id=self.tenant.id, by=_actor(request), base_model=values["base_model"],
            train_version_id=values["train_version"], validation_version_id=values.get("validation_version") or None,
            task=values.get("task") or None, method=values.get("method") or "lora",
            hyperparameters=values.get("hyperparameters"), suffix=values.get("suffix") or "", gpus=values.get("gpus", 1),
        )
        return Response(FineTuneOutput(job).data, status=status.HTTP_202_ACCEPTED)


class FineTuneDetailApi(TrainingApiMixin, generics.RetrieveAPIView):
    serializer_class = FineTuneOutput
    lookup_url_kwarg = "job_id"

    def safely_get_queryset(self):
        return Job.objects.filter(kind=services.FINETUNE_KIND)


class FineTuneCancelApi(TrainingApiMixin, APIView):
    @extend_schema(request=None, responses={202: FineTuneOutput})
    def post(self, request, job_id):
        job = services.finetune_cancel(tenant_id=self.tenant.id, job_id=job_id, by=_actor(request))
        return Response(FineTuneOutput(job).data, status=status.HTTP_202_ACCEPTED)


class FineTuneEventListApi(TrainingApiMixin, generics.ListAPIView):
    """The job's events in order: state changes, logs, and metrics (data.kind "train" every
    log_every_steps, "eval" at each evaluation)."""

    serializer_class = JobEventOutput
    pagination_class = SequenceCursorPagination

    def safely_get_queryset(self):
        job = selectors.finetune_get(tenant_id=self.tenant.id, job_id=self.kwargs["job_id"])
        return JobEvent.objects.filter(job_id=job.id)


class StepCursorPagination(SequenceCursorPagination):
    ordering = ("step",)


class FineTuneCheckpointListApi(TrainingApiMixin, generics.ListAPIView):
    serializer_class = CheckpointOutput
    pagination_class = StepCursorPagination

    def safely_get_queryset(self):
        job = selectors.finetune_get(tenant_id=self.tenant.id, job_id=self.kwargs["job_id"])
        return TrainingCheckpoint.objects.filter(job_id=job.id)


class BaseModelListApi(APIView):
    """The platform's base-model catalog (the same for every tenant)."""

    required_area = "training"

    @extend_schema(responses=BaseModelOutput(many=True))
    def get(self, request):
        return Response(BaseModelOutput(BaseModel.objects.order_by("name"), many=True).data)


class TunedModelListApi(TrainingApiMixin, generics.ListAPIView):
    serializer_class = TunedModelOutput

    def safely_get_queryset(self):
        return TunedModel.objects.select_related("base_model")


class TunedModelDetailApi(TrainingApiMixin, generics.RetrieveAPIView):
    serializer_class = TunedModelOutput
    lookup_url_kwarg = "model_id"

    def safely_get_queryset(self):
        return TunedModel.objects.select_related("base_model")


class TunedModelCardApi(TrainingApiMixin, generics.GenericAPIView):
    """The model card, as Markdown."""

    lookup_url_kwarg = "model_id"

    def safely_get_queryset(self):
        return TunedModel.objects.all()

    @extend_schema(responses={(200, "text/markdown"): str})
    def get(self, request, model_id):
        model = self.get_object()
        return HttpResponse(model.model_card, content_type="text/markdown; charset=utf-8")
