"""Lode's own generation API: prompt templates and few-shot example sets (create, list, read,
change, delete, render a preview) and batch generation jobs over dataset versions. Interactive
generation is the OpenAI-compatible API (/v1/)."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from lode.core.errors import ValidationFailed
from lode.core.models import Job
from tenants.context import request_actor
from tenants.scoping import TenantScopedMixin

from . import batch, prompts
from .models import ExampleSet, PromptTemplate
from .serializers import (
    ExampleSetOutput,
    GenerationJobInput,
    GenerationJobOutput,
    PromptTemplateOutput,
    TemplateRenderInput,
    TemplateRenderOutput,
)


class GenerationApiMixin(TenantScopedMixin):
    required_area = "generation"


def _body(request) -> dict:
    if not isinstance(request.data, dict):
        raise ValidationFailed("body: a JSON object", details={"field": "body"})
    return dict(request.data)


class ExampleSetListCreateApi(GenerationApiMixin, generics.ListAPIView):
    serializer_class = ExampleSetOutput

    def safely_get_queryset(self):
        return ExampleSet.objects.all()

    @extend_schema(request=ExampleSetOutput, responses={201: ExampleSetOutput})
    def post(self, request):
        body = _body(request)
        example_set = prompts.example_set_create(tenant_id=self.tenant.id, by=request_actor(request), name=body.get("name"),
                                                 examples=body.get("examples"), description=body.get("description") or "")
        return Response(ExampleSetOutput(example_set).data, status=status.HTTP_201_CREATED)


class ExampleSetDetailApi(GenerationApiMixin, generics.RetrieveAPIView):
    serializer_class = ExampleSetOutput
    lookup_field = "name"

    def safely_get_queryset(self):
        return ExampleSet.objects.all()

    @extend_schema(request=ExampleSetOutput, responses=ExampleSetOutput)
    def patch(self, request, name):
        example_set = prompts.example_set_update(tenant_id=self.tenant.id, by=request_actor(request), name=name,
                                                 changes=_body(request))
        return Response(ExampleSetOutput(example_set).data)

    def delete(self, request, name):
        prompts.example_set_delete(tenant_id=self.tenant.id, by=request_actor(request), name=name)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PromptTemplateListCreateApi(GenerationApiMixin, generics.ListAPIView):
    serializer_class = PromptTemplateOutput

    def safely_get_queryset(self):
        return PromptTemplate.objects.select_related("example_set")

    @extend_schema(request=PromptTemplateOutput, responses={201: PromptTemplateOutput})
    def post(self, request):
        body = _body(request)
        values = {key: value for key, value in body.items() if key != "name"}  # the service refuses unknown keys
        template = prompts.template_create(tenant_id=self.tenant.id, by=request_actor(request), name=body.get("name"),
                                           values=values)
        return Response(PromptTemplateOutput(template).data, status=status.HTTP_201_CREATED)


class PromptTemplateDetailApi(GenerationApiMixin, generics.RetrieveAPIView):
    serializer_class = PromptTemplateOutput
    lookup_field = "name"

    def safely_get_queryset(self):
        return PromptTemplate.objects.select_related("example_set")

    @extend_schema(request=PromptTemplateOutput, responses=PromptTemplateOutput)
    def patch(self, request, name):
        template = prompts.template_update(tenant_id=self.tenant.id, by=request_actor(request), name=name,
                                           changes=_body(request))
        return Response(PromptTemplateOutput(template).data)

    def delete(self, request, name):
        prompts.template_delete(tenant_id=self.tenant.id, by=request_actor(request), name=name)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PromptTemplateRenderApi(GenerationApiMixin, APIView):
    """The messages (for a chat model) and the prompt (for a completion model) the template gives
    for these variables, without generating: a preview."""

    @extend_schema(request=TemplateRenderInput, responses=TemplateRenderOutput)
    def post(self, request, name):
        prompts.template_get(tenant_id=self.tenant.id, name=name)  # 404 for a name the tenant does not have
        data = TemplateRenderInput(data=request.data)
        data.is_valid(raise_exception=True)
        spec = {"name": name, **{key: value for key, value in data.validated_data.items() if value is not None}}
        use, values = prompts.template_use(tenant_id=self.tenant.id, spec=spec, field="template")
        rendered = use.render(values)
        return Response(TemplateRenderOutput({"name": use.name, "version": use.version, "messages": rendered.messages(),
                                              "prompt": rendered.prompt()}).data)


class GenerationJobListCreateApi(GenerationApiMixin, generics.GenericAPIView):
    serializer_class = GenerationJobOutput

    def safely_get_queryset(self):
        return Job.objects.filter(kind=batch.BATCH_KIND)

    @extend_schema(responses=GenerationJobOutput(many=True))
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(GenerationJobOutput(page, many=True).data)

    @extend_schema(request=GenerationJobInput, responses={202: GenerationJobOutput})
    def post(self, request):
        data = GenerationJobInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        job = batch.generation_job_create(
            tenant_id=self.tenant.id, by=request_actor(request), model=values["model"], version_id=values["version"],
            template=values.get("template"), input_field=values.get("input_field") or None,
            output_field=values["output_field"], params=values["params"],
        )
        return Response(GenerationJobOutput(job).data, status=status.HTTP_202_ACCEPTED)


class GenerationJobDetailApi(GenerationApiMixin, generics.RetrieveAPIView):
    serializer_class = GenerationJobOutput
    lookup_url_kwarg = "job_id"

    def safely_get_queryset(self):
        return Job.objects.filter(kind=batch.BATCH_KIND)


class GenerationJobCancelApi(GenerationApiMixin, APIView):
    @extend_schema(request=None, responses={202: GenerationJobOutput})
    def post(self, request, job_id):
        job = batch.generation_job_cancel(tenant_id=self.tenant.id, job_id=job_id, by=request_actor(request))
        return Response(GenerationJobOutput(job).data, status=status.HTTP_202_ACCEPTED)
