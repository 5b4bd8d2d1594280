"""Core API: jobs (submit, follow, cancel) and stored artifacts (upload, download, delete)."""
from django.conf import settings
from django.http import HttpResponseRedirect
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.context import current_access
from tenants.scoping import TenantScopedMixin

from . import artifacts
from .errors import PayloadTooLarge, ValidationFailed
from .jobs import selectors as job_selectors
from .jobs import services as job_services
from .jobs.registry import job_kind_get, job_kind_list
from .models import Artifact, Job, JobEvent, JobState
from .pagination import SequenceCursorPagination
from .serializers import (
    ArtifactDownloadOutput,
    ArtifactOutput,
    ArtifactUploadInput,
    JobCreateInput,
    JobEventOutput,
    JobKindOutput,
    JobOutput,
)
from .services import artifact_create, artifact_delete


class JobListCreateApi(TenantScopedMixin, generics.GenericAPIView):
    required_area = "platform"
    serializer_class = JobOutput

    def safely_get_queryset(self):
        jobs = Job.objects.all()
        state = self.request.query_params.get("state")
        if state:
            if state not in JobState.values:
                raise ValidationFailed(f"state: must be one of {', '.join(JobState.values)}", details={"field": "state"})
            jobs = jobs.filter(state=state)
        return jobs

    @extend_schema(parameters=[OpenApiParameter("state", str, enum=JobState.values)], responses=JobOutput(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(JobOutput(page, many=True).data)

    @extend_schema(request=JobCreateInput, responses={202: JobOutput})
    def post(self, request):
        data = JobCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        kind = job_kind_get(data.validated_data["kind"])
        if kind.created_through:
            raise ValidationFailed(f"kind: create {kind.name} jobs through {kind.created_through}",
                                   details={"field": "kind"})
        job = job_services.job_create(
            tenant_id=self.tenant.id, created_by=request.user, kind=data.validated_data["kind"],
            params=data.validated_data["params"],
        )
        return Response(JobOutput(job).data, status=status.HTTP_202_ACCEPTED)


class JobDetailApi(TenantScopedMixin, generics.RetrieveAPIView):
    required_area = "platform"
    serializer_class = JobOutput
    lookup_url_kwarg = "job_id"

    def safely_get_queryset(self):
        return Job.objects.all()


class JobCancelApi(TenantScopedMixin, APIView):
    required_area = "platform"
    @extend_schema(request=None, responses={202: JobOutput})
    def post(self, request, job_id):
        job = job_services.job_cancel(tenant_id=self.tenant.id, job_id=job_id)
        return Response(JobOutput(job).data, status=status.HTTP_202_ACCEPTED)


class JobEventListApi(TenantScopedMixin, generics.ListAPIView):
    required_area = "platform"
    serializer_class = JobEventOutput
    pagination_class = SequenceCursorPagination

    def safely_get_queryset(self):
        job = job_selectors.job_get(tenant_id=self.tenant.id, job_id=self.kwargs["job_id"])
        return JobEvent.objects.filter(job_id=job.id)


class JobKindListApi(APIView):
    required_area = "platform"
    pagination_class = None

    @extend_schema(responses=JobKindOutput(many=True))
    def get(self, request):
        return Response(JobKindOutput(job_kind_list(), many=True).data)


class ArtifactListCreateApi(TenantScopedMixin, generics.GenericAPIView):
    required_area = "platform"
    serializer_class = ArtifactOutput

    def safely_get_queryset(self):
        return Artifact.objects.all()

    @extend_schema(responses=ArtifactOutput(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ArtifactOutput(page, many=True).data)

    @extend_schema(request={"multipart/form-data": ArtifactUploadInput}, responses={201: ArtifactOutput})
    def post(self, request):
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        limit = settings.ARTIFACT_UPLOAD_MAX_BYTES
        if declared > limit + 64 * 1024:  # multipart framing adds a little
            raise PayloadTooLarge(f"file: larger than the {limit} byte limit", details={"field": "file", "limit_bytes": limit})
        data = ArtifactUploadInput(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        artifact = artifact_create(
            tenant_id=self.tenant.id, created_by=request.user, name=upload.name, stream=upload,
            content_type=upload.content_type or "",
        )
        return Response(ArtifactOutput(artifact).data, status=status.HTTP_201_CREATED)


class ArtifactDetailApi(TenantScopedMixin, generics.RetrieveDestroyAPIView):
    required_area = "platform"
    serializer_class = ArtifactOutput
    lookup_url_kwarg = "artifact_id"

    def safely_get_queryset(self):
        return Artifact.objects.all()

    def destroy(self, request, *args, **kwargs):
        artifact = self.get_object()
        access = current_access(request)
        artifact_delete(
            tenant_id=self.tenant.id, artifact_id=artifact.id, by=access.user, api_key=access.api_key,
            ip=request.META.get("REMOTE_ADDR") or None,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ArtifactDownloadApi(TenantScopedMixin, generics.GenericAPIView):
    """A short-lived presigned URL for the artifact's bytes; `?redirect=1` answers 302 to it."""

    required_area = "platform"

    lookup_url_kwarg = "artifact_id"
    serializer_class = ArtifactDownloadOutput

    def safely_get_queryset(self):
        return Artifact.objects.all()

    @extend_schema(parameters=[OpenApiParameter("redirect", bool)], responses=ArtifactDownloadOutput)
    def get(self, request, artifact_id):
        artifact = self.get_object()
        ttl = settings.S3_PRESIGN_TTL_SECONDS
        url = artifacts.presigned_get_url(tenant_id=self.tenant.id, key=artifact.key, expires_in=ttl, filename=artifact.name)
        if request.query_params.get("redirect") in {"1", "true"}:
            return HttpResponseRedirect(url)
        return Response({"url": url, "expires_in": ttl})
