"""Training API: fine-tune jobs (create with an estimate, follow, events, checkpoints, cancel) and
the model registry (the platform's base models, the tenant's fine-tuned models and their cards)."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from lode.core.errors import PayloadTooLarge, ValidationFailed
from lode.core.models import Job, JobEvent, JobState
from lode.core.pagination import SequenceCursorPagination
from lode.core.serializers import JobEventOutput
from tenants.context import request_actor
from tenants.scoping import TenantScopedMixin

from . import selectors, services
from .models import BaseModel, TrainingCheckpoint, TunedModel
from .serializers import (
    BaseModelOutput,
    BaseModelUploadInput,
    CheckpointOutput,
    FineTuneInput,
    FineTuneOutput,
    TunedModelOutput,
)


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
            tenant_id=self.tenant.id, by=request_actor(request), base_model=values["base_model"],
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
        job = services.finetune_cancel(tenant_id=self.tenant.id, job_id=job_id, by=request_actor(request))
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


class BaseModelListCreateApi(TrainingApiMixin, generics.GenericAPIView):
    """GET: the platform's catalog and the tenant's own uploads. POST (multipart: file = a zip of a
    Hugging Face-format folder, name, display_name): registers an upload for this tenant only."""

    serializer_class = BaseModelOutput
    pagination_class = None
    tenant_field = "tenant"

    def safely_get_queryset(self):
        return BaseModel.objects.all()

    @extend_schema(responses=BaseModelOutput(many=True))
    def get(self, request):
        return Response(BaseModelOutput(selectors.base_model_list(tenant_id=self.tenant.id), many=True).data)

    @extend_schema(request={"multipart/form-data": BaseModelUploadInput}, responses={201: BaseModelOutput})
    def post(self, request):
        limit = settings.MODEL_UPLOAD_MAX_BYTES
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit + 64 * 1024:
            raise PayloadTooLarge(f"file: larger than the {limit} byte limit", details={"field": "file", "limit_bytes": limit})
        data = BaseModelUploadInput(data=request.data)
        data.is_valid(raise_exception=True)
        model = services.base_model_upload(tenant_id=self.tenant.id, by=request_actor(request), **data.validated_data)
        return Response(BaseModelOutput(model).data, status=status.HTTP_201_CREATED)


class BaseModelDetailApi(TrainingApiMixin, generics.RetrieveDestroyAPIView):
    """One of the tenant's own uploads (catalog models are listed, not managed, here)."""

    serializer_class = BaseModelOutput
    lookup_url_kwarg = "base_model_id"

    def safely_get_queryset(self):
        return BaseModel.objects.all()

    def destroy(self, request, *args, **kwargs):
        services.base_model_delete(tenant_id=self.tenant.id, by=request_actor(request), base_model_id=kwargs["base_model_id"])
        return Response(status=status.HTTP_204_NO_CONTENT)


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
