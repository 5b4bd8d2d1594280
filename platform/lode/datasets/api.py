"""Datasets API: datasets, uploads (through the API or presigned multipart to S3), versions with
their lineage, rows and downloads, and operations that build new versions."""
from __future__ import annotations

import json

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from lode.core import artifacts
from lode.core.errors import PayloadTooLarge, ValidationFailed
from tenants.context import request_actor
from tenants.scoping import TenantScopedMixin

from . import selectors, services
from .models import Dataset, DatasetVersion, Upload
from .serializers import (
    DatasetInput,
    DatasetOutput,
    MultipartCompleteInput,
    MultipartStartInput,
    OperationInput,
    UploadInput,
    UploadOutput,
    VersionOutput,
    VersionSummaryOutput,
)
from .shards import shard_key


def _mapping(value):
    """column_mapping arrives as JSON in a JSON body, or as a JSON string in a multipart form."""
    if isinstance(value, str) and value:
        try:
            return json.loads(value)
        except ValueError:
            raise ValidationFailed("column_mapping: not valid JSON", details={"field": "column_mapping"}) from None
    return value


class DatasetsApiMixin(TenantScopedMixin):
    required_area = "datasets"


class DatasetListCreateApi(DatasetsApiMixin, generics.GenericAPIView):
    serializer_class = DatasetOutput

    def safely_get_queryset(self):
        return Dataset.objects.all()

    @extend_schema(responses=DatasetOutput(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(DatasetOutput(page, many=True).data)

    @extend_schema(request=DatasetInput, responses={201: DatasetOutput})
    def post(self, request):
        data = DatasetInput(data=request.data)
        data.is_valid(raise_exception=True)
        dataset = services.dataset_create(tenant_id=self.tenant.id, by=request_actor(request), **data.validated_data)
        return Response(DatasetOutput(dataset).data, status=status.HTTP_201_CREATED)


class DatasetDetailApi(DatasetsApiMixin, generics.RetrieveAPIView):
    serializer_class = DatasetOutput
    lookup_url_kwarg = "dataset_id"

    def safely_get_queryset(self):
        return Dataset.objects.all()


class DatasetVersionListApi(DatasetsApiMixin, generics.ListAPIView):
    serializer_class = VersionSummaryOutput

    def safely_get_queryset(self):
        dataset = generics.get_object_or_404(Dataset.objects.filter(tenant_id=self.tenant.id), id=self.kwargs["dataset_id"])
        return DatasetVersion.objects.filter(dataset_id=dataset.id)


class UploadCreateApi(DatasetsApiMixin, generics.GenericAPIView):
    """A file through the API (multipart form): checked at once (a 4xx names what is wrong), then
    ingested by a job into the dataset's next version (202 with the version and its job)."""

    serializer_class = VersionOutput
    lookup_url_kwarg = "dataset_id"

    def safely_get_queryset(self):
        return Dataset.objects.all()

    @extend_schema(request={"multipart/form-data": UploadInput}, responses={202: VersionOutput})
    def post(self, request, dataset_id):
        dataset = self.get_object()
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        limit = settings.DATASET_UPLOAD_MAX_BYTES
        if declared > limit + 64 * 1024:
            raise PayloadTooLarge(f"file: larger than the {limit} byte limit", details={"field": "file", "limit_bytes": limit})
        data = UploadInput(data=request.data)
        data.is_valid(raise_exception=True)
        _, version = services.upload_direct(
            tenant_id=self.tenant.id, dataset_id=dataset.id, file=data.validated_data["file"],
            declared_format=data.validated_data.get("format") or None,
            column_mapping=_mapping(data.validated_data.get("column_mapping")), by=request_actor(request),
        )
        return Response(VersionOutput(version).data, status=status.HTTP_202_ACCEPTED)


class MultipartStartApi(DatasetsApiMixin, generics.GenericAPIView):
    """Large files: presigned part URLs straight to S3 (PUT each part, keep its ETag), then complete."""

    serializer_class = UploadOutput
    lookup_url_kwarg = "dataset_id"

    def safely_get_queryset(self):
        return Dataset.objects.all()

    @extend_schema(request=MultipartStartInput, responses={201: dict})
    def post(self, request, dataset_id):
        dataset = self.get_object()
        data = MultipartStartInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        upload, urls = services.upload_multipart_start(
            tenant_id=self.tenant.id, dataset_id=dataset.id, filename=values["filename"], size=values["size"],
            part_count=values["part_count"], declared_format=values.get("format") or None,
            column_mapping=_mapping(values.get("column_mapping")), by=request_actor(request),
        )
        body = {"upload": UploadOutput(upload).data, "expires_in": settings.S3_PRESIGN_TTL_SECONDS,
                "parts": [{"part_number": number, "url": url} for number, url in enumerate(urls, start=1)]}
        return Response(body, status=status.HTTP_201_CREATED)


class MultipartCompleteApi(DatasetsApiMixin, generics.GenericAPIView):
    serializer_class = VersionOutput
    lookup_url_kwarg = "upload_id"

    def safely_get_queryset(self):
        return Upload.objects.all()

    @extend_schema(request=MultipartCompleteInput, responses={202: VersionOutput})
    def post(self, request, upload_id):
        upload = self.get_object()
        data = MultipartCompleteInput(data=request.data)
        data.is_valid(raise_exception=True)
        _, version = services.upload_multipart_complete(
            tenant_id=self.tenant.id, upload_id=upload.id, parts=data.validated_data["parts"], by=request_actor(request)
        )
        return Response(VersionOutput(version).data, status=status.HTTP_202_ACCEPTED)


class VersionDetailApi(DatasetsApiMixin, generics.RetrieveAPIView):
    serializer_class = VersionOutput
    lookup_url_kwarg = "version_id"

    def safely_get_queryset(self):
        return DatasetVersion.objects.all()


class VersionLineageApi(DatasetsApiMixin, generics.GenericAPIView):
    serializer_class = VersionSummaryOutput
    lookup_url_kwarg = "version_id"
    pagination_class = None

    def safely_get_queryset(self):
        return DatasetVersion.objects.all()

    @extend_schema(responses=VersionSummaryOutput(many=True))
    def get(self, request, version_id):
        version = self.get_object()
        return Response(VersionSummaryOutput(selectors.version_lineage(tenant_id=self.tenant.id, version_id=version.id), many=True).data)


def _int_param(request, name: str, default: int, low: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValidationFailed(f"{name}: a whole number", details={"field": name}) from None
    if not low <= number <= high:
        raise ValidationFailed(f"{name}: from {low} to {high}", details={"field": name})
    return number


class VersionRowsApi(DatasetsApiMixin, generics.GenericAPIView):
    """Rows in the version's order, `offset`/`limit` paged (a version never changes, so offsets are
    stable), optionally only those containing `q`."""

    lookup_url_kwarg = "version_id"
    pagination_class = None

    def safely_get_queryset(self):
        return DatasetVersion.objects.all()

    @extend_schema(parameters=[OpenApiParameter("offset", int), OpenApiParameter("limit", int), OpenApiParameter("q", str)],
                   responses=dict)
    def get(self, request, version_id):
        version = self.get_object()
        query = request.query_params.get("q", "")
        if len(query) > 200:
            raise ValidationFailed("q: at most 200 characters", details={"field": "q"})
        return Response(selectors.version_rows(
            tenant_id=self.tenant.id, version_id=version.id, offset=_int_param(request, "offset", 0, 0, 10**10),
            limit=_int_param(request, "limit", 50, 1, selectors.MAX_PAGE), query=query,
        ))


class VersionDownloadApi(DatasetsApiMixin, generics.GenericAPIView):
    """`?format=jsonl|csv` streams the rows; `parquet` answers short-lived presigned URLs of the
    shards."""

    lookup_url_kwarg = "version_id"

    def safely_get_queryset(self):
        return DatasetVersion.objects.all()

    @extend_schema(parameters=[OpenApiParameter("format", str, enum=["jsonl", "csv", "parquet"])], responses=dict)
    def get(self, request, version_id):
        version = self.get_object()
        fmt = request.query_params.get("format", "jsonl")
        if fmt not in ("jsonl", "csv", "parquet"):
            raise ValidationFailed("format: jsonl, csv or parquet", details={"field": "format"})
        if version.status != DatasetVersion.Status.READY:
            from lode.core.errors import Conflict

            raise Conflict(f"The version is {version.status}; only a ready version can be downloaded.")
        name = f"{version.dataset.name}-v{version.number}".replace('"', "")
        if fmt == "parquet":
            ttl = settings.S3_PRESIGN_TTL_SECONDS
            urls = [artifacts.presigned_get_url(tenant_id=self.tenant.id, key=shard_key(version.prefix, index), expires_in=ttl,
                                                filename=f"{name}-{index:05d}.parquet")
                    for index in range(version.shard_count)]
            return Response({"expires_in": ttl, "shards": urls})
        response = StreamingHttpResponse(
            selectors.version_export(tenant_id=self.tenant.id, version_id=version.id, fmt=fmt),
            content_type="application/x-ndjson" if fmt == "jsonl" else "text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
        return response


class OperationCreateApi(DatasetsApiMixin, generics.GenericAPIView):
    serializer_class = VersionOutput
    lookup_url_kwarg = "version_id"

    def safely_get_queryset(self):
        return DatasetVersion.objects.all()

    @extend_schema(request=OperationInput, responses={202: VersionOutput})
    def post(self, request, version_id):
        version = self.get_object()
        data = OperationInput(data=request.data)
        data.is_valid(raise_exception=True)
        child = services.operation_launch(tenant_id=self.tenant.id, version_id=version.id,
                                          operation=data.validated_data["operation"], params=data.validated_data["params"],
                                          by=request_actor(request))
        return Response(VersionOutput(child).data, status=status.HTTP_202_ACCEPTED)
