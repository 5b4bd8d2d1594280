"""The OpenAI-compatible API under /v1/: files, fine-tuning jobs (events, checkpoints, cancel) and
models, so the official `openai` client works against Lode by changing its base_url. Lode API keys
authenticate (`Authorization: Bearer lode_sk_…`, what the client sends); every error is in
OpenAI's shape (openai_errors.py). Thin views: input → one service or selector → OpenAI's shape."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from lode.core.errors import LodeError, PayloadTooLarge, ValidationFailed
from tenants.context import request_actor
from tenants.scoping import TenantScopedMixin

from . import selectors, services
from .openai_errors import openai_error_body, openai_exception_handler
from .openai_serializers import (
    FileCreateInput,
    FineTuningJobCreateInput,
    file_deleted,
    file_object,
    fine_tuning_checkpoint_object,
    fine_tuning_event_object,
    fine_tuning_job_object,
    list_body,
    list_params,
)


class JsonAlways(DefaultContentNegotiation):
    """Answers JSON whatever the Accept header says: the client asks for file content with
    `Accept: application/binary`, which no renderer of ours names (content is streamed raw)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class OpenAIApiView(TenantScopedMixin, APIView):
    """Tenant-scoped (the selectors take the request's tenant), errors in OpenAI's shape."""

    pagination_class = None
    content_negotiation_class = JsonAlways

    def get_exception_handler(self):
        return openai_exception_handler


# --- Files ----------------------------------------------------------------------------------------


class FileListCreateApi(OpenAIApiView):
    required_area = "datasets"

    @extend_schema(exclude=True)
    def get(self, request):
        after, limit = list_params(request.query_params, default_limit=10000, max_limit=10000)
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ValidationFailed("order: asc or desc", details={"field": "order"})
        versions, has_more = selectors.openai_file_list(tenant_id=self.tenant.id, after=after, limit=limit, order=order,
                                                        purpose=request.query_params.get("purpose"))
        return Response(list_body([file_object(version) for version in versions], has_more=has_more))

    @extend_schema(exclude=True)
    def post(self, request):
        limit = settings.DATASET_UPLOAD_MAX_BYTES
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit + 64 * 1024:
            raise PayloadTooLarge(f"file: larger than the {limit} byte limit", details={"field": "file", "limit_bytes": limit})
        data = FileCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.openai_file_create(tenant_id=self.tenant.id, by=request_actor(request), **data.validated_data)
        return Response(file_object(version), status=status.HTTP_200_OK)


class FileDetailApi(OpenAIApiView):
    required_area = "datasets"

    @extend_schema(exclude=True)
    def get(self, request, file_id):
        return Response(file_object(selectors.openai_file_get(tenant_id=self.tenant.id, file_id=file_id)))

    @extend_schema(exclude=True)
    def delete(self, request, file_id):
        services.openai_file_delete(tenant_id=self.tenant.id, by=request_actor(request), file_id=file_id)
        return Response(file_deleted(file_id))


class FileContentApi(OpenAIApiView):
    required_area = "datasets"

    @extend_schema(exclude=True)
    def get(self, request, file_id):
        chunks, content_type = selectors.openai_file_content(tenant_id=self.tenant.id, file_id=file_id)
        return StreamingHttpResponse(chunks, content_type=content_type)


# --- Fine-tuning jobs -----------------------------------------------------------------------------


class FineTuningJobListCreateApi(OpenAIApiView):
    required_area = "training"

    @extend_schema(exclude=True)
    def get(self, request):
        after, limit = list_params(request.query_params, default_limit=20, max_limit=100)
        jobs, has_more = selectors.openai_finetune_list(tenant_id=self.tenant.id, after=after, limit=limit)
        return Response(list_body([fine_tuning_job_object(job) for job in jobs], has_more=has_more))

    @extend_schema(exclude=True)
    def post(self, request):
        data = FineTuningJobCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        job = services.openai_finetune_create(
            tenant_id=self.tenant.id, by=request_actor(request), model=values["model"], training_file=values["training_file"],
            validation_file=values.get("validation_file") or None, hyperparameters=values.get("hyperparameters"),
            method=values.get("method"), suffix=values.get("suffix"), seed=values.get("seed"),
        )
        return Response(fine_tuning_job_object(job), status=status.HTTP_200_OK)


class FineTuningJobDetailApi(OpenAIApiView):
    required_area = "training"

    @extend_schema(exclude=True)
    def get(self, request, fine_tuning_job_id):
        job = selectors.openai_finetune_get(tenant_id=self.tenant.id, fine_tuning_job_id=fine_tuning_job_id)
        return Response(fine_tuning_job_object(job))


class FineTuningJobCancelApi(OpenAIApiView):
    required_area = "training"

    @extend_schema(exclude=True)
    def post(self, request, fine_tuning_job_id):
        job = services.openai_finetune_cancel(tenant_id=self.tenant.id, by=request_actor(request),
                                              fine_tuning_job_id=fine_tuning_job_id)
        return Response(fine_tuning_job_object(job))


class FineTuningJobEventListApi(OpenAIApiView):
    required_area = "training"

    @extend_schema(exclude=True)
    def get(self, request, fine_tuning_job_id):
        after, limit = list_params(request.query_params, default_limit=20, max_limit=1000)
        events, has_more = selectors.openai_finetune_events(tenant_id=self.tenant.id, fine_tuning_job_id=fine_tuning_job_id,
                                                            after=after, limit=limit)
        return Response(list_body([fine_tuning_event_object(event) for event in events], has_more=has_more))


class FineTuningJobCheckpointListApi(OpenAIApiView):
    required_area = "training"

    @extend_schema(exclude=True)
    def get(self, request, fine_tuning_job_id):
        after, limit = list_params(request.query_params, default_limit=10, max_limit=100)
        job, checkpoints, has_more, train, evaluation = selectors.openai_finetune_checkpoints(
            tenant_id=self.tenant.id, fine_tuning_job_id=fine_tuning_job_id, after=after, limit=limit)
        model_name = (job.result or {}).get("model")
        data = [fine_tuning_checkpoint_object(
                    checkpoint, job_id=job.id, model_name=model_name,
                    train=selectors.last_at_or_before(train, checkpoint.step),
                    evaluation=selectors.last_at_or_before(evaluation, checkpoint.step))
                for checkpoint in checkpoints]
        return Response(list_body(data, has_more=has_more))


# --- Models ---------------------------------------------------------------------------------------


class _ModelsApi(OpenAIApiView):
    """The models a tenant may call: a key that generates lists them, and so does one that
    fine-tunes (its jobs' models appear here)."""

    required_area = "generation"
    also_accepted_areas = ("training",)


class ModelListApi(_ModelsApi):
    @extend_schema(exclude=True)
    def get(self, request):
        return Response(list_body(selectors.openai_model_list(tenant=self.tenant)))


class ModelDetailApi(_ModelsApi):

    @extend_schema(exclude=True)
    def get(self, request, model):
        return Response(selectors.openai_model_get(tenant=self.tenant, name=model))


# --- Chat completions and completions -------------------------------------------------------------


def _sampling(body: dict) -> dict:
    """OpenAI's sampling fields (and top_k, repetition_penalty beside them) for the engine."""
    if body.get("n") not in (None, 1):
        raise ValidationFailed("n: only 1 choice per request", details={"field": "n"})
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    params = {key: body[key] for key in ("temperature", "top_p", "top_k", "repetition_penalty", "stop", "seed")
              if body.get(key) is not None}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    return params


def _usage(usage: dict) -> dict:
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish(event: dict) -> str:
    return {"stop": "stop", "length": "length", "content_filter": "content_filter"}.get(event.get("finish_reason"), "stop")


class _CompletionApi(OpenAIApiView):
    """POST: one completion of the named model (the tenant's fine-tune or a base model), whole or
    streamed as server-sent events (`stream: true`, ended by `data: [DONE]`)."""

    required_area = "generation"
    chat = True

    def post(self, request):
        from django.utils import timezone

        from .completions import completion_start, completion_stream, completion_text

        body = request.data if isinstance(request.data, dict) else {}
        include_usage = _include_usage(body.get("stream_options"))
        # Lode's extension: `template` (a stored prompt template's name, or {name, variables,
        # example_set, max_examples}; the openai client sends it with extra_body).
        template = body.get("template")
        if self.chat:
            inputs = {"messages": body.get("messages")}
            if inputs["messages"] is None and template is None:
                raise ValidationFailed("messages: required", details={"field": "messages"})
        else:
            prompt = body.get("prompt")
            inputs = {"prompt": prompt[0] if isinstance(prompt, list) and len(prompt) == 1 else prompt}
        tenant_id = self.tenant.id
        run = completion_start(tenant_id=tenant_id, model=body.get("model"), params=_sampling(body), template=template,
                               chat=self.chat, **inputs)
        created = int(timezone.now().timestamp())
        prefix, kind = ("chatcmpl-", "chat.completion") if self.chat else ("cmpl-", "text_completion")
        head = {"id": prefix + run.id, "created": created, "model": run.model.name,
                **({"template": run.template} if run.template else {})}
        if not body.get("stream"):
            result = completion_text(run, tenant_id=tenant_id)
            finish = "content_filter" if result["finish_reason"] == "content_filter" else _finish(result)
            choice = ({"index": 0, "message": {"role": "assistant", "content": result["text"]}, "finish_reason": finish,
                       "logprobs": None} if self.chat else
                      {"index": 0, "text": result["text"], "finish_reason": finish, "logprobs": None})
            return Response({**head, "object": kind, "choices": [choice], "usage": _usage(result["usage"]),
                             "system_fingerprint": None,
                             "lode_safety": {"prompt": run.prompt_verdict.as_dict(), "output": result["verdict"].as_dict()}})
        chunk_kind = "chat.completion.chunk" if self.chat else "text_completion"

        def chunk(delta: str | None, finish: str | None, *, first: bool = False) -> bytes:
            if self.chat:
                content = {"role": "assistant", "content": ""} if first else ({"content": delta} if delta else {})
                choice = {"index": 0, "delta": content, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
            return _sse({**head, "object": chunk_kind, "choices": [choice]})

        def stream():
            # Released as completions.completion_stream allows (as produced, after the output's
            # verdict, or sentence by sentence, by the tenant's policy).
            if self.chat:
                yield chunk(None, None, first=True)
            try:
                for kind, *rest in completion_stream(run, tenant_id=tenant_id):
                    if kind == "delta":
                        yield chunk(rest[0], None)
                    elif kind == "error":
                        yield _sse({"error": {"message": rest[0], "type": "server_error", "param": None,
                                              "code": "generation_failed"}})
                    else:
                        done, verdict, finish = rest
                        yield _sse({**head, "object": chunk_kind, "choices": [
                            {"index": 0, **({"delta": {}} if self.chat else {"text": ""}), "finish_reason": _finish(
                                {**done, "finish_reason": finish}), "logprobs": None}],
                            "lode_safety": {"prompt": run.prompt_verdict.as_dict(), "output": verdict.as_dict()}})
                        if include_usage:
                            yield _sse({**head, "object": chunk_kind, "choices": [],
                                        "usage": _usage(done.get("usage") or {})})
            except LodeError as exc:  # e.g. the generation server did not answer in time (503)
                # The 200 and the first chunks are sent: the error travels as an event, and the
                # stream still ends as OpenAI's clients expect.
                field = exc.details.get("field") if isinstance(exc.details, dict) else None
                yield _sse(openai_error_body(status=exc.http_status, message=exc.message, code=exc.code, param=field))
            yield b"data: [DONE]\n\n"

        response = StreamingHttpResponse(stream(), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


def _include_usage(stream_options: Any) -> bool:
    if stream_options is None:
        return False
    if not isinstance(stream_options, dict):
        raise ValidationFailed("stream_options: an object, e.g. {\"include_usage\": true}",
                               details={"field": "stream_options"})
    include_usage = stream_options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise ValidationFailed("stream_options.include_usage: true or false",
                               details={"field": "stream_options.include_usage"})
    return bool(include_usage)


def _sse(payload: dict) -> bytes:
    import json

    return b"data: " + json.dumps(payload).encode() + b"\n\n"


class ChatCompletionApi(_CompletionApi):
    chat = True

    @extend_schema(exclude=True)
    def post(self, request):
        return super().post(request)


class CompletionApi(_CompletionApi):
    chat = False

    @extend_schema(exclude=True)
    def post(self, request):
        return super().post(request)


class ImageGenerationApi(OpenAIApiView):
    """POST: images from a prompt on a text-to-image model (the tenant's LoRA fine-tune or a base
    pipeline): `b64_json`, or `url` (the PNG stored under the tenant's generated/ prefix and handed
    out as a short-lived presigned URL)."""

    required_area = "generation"

    @extend_schema(exclude=True)
    def post(self, request):
        import base64

        from django.utils import timezone

        from lode.core import artifacts

        from .completions import images_generate

        body = request.data if isinstance(request.data, dict) else {}
        response_format = body.get("response_format") or "url"
        if response_format not in ("url", "b64_json"):
            raise ValidationFailed("response_format: url or b64_json", details={"field": "response_format"})
        params = {key: body[key] for key in ("n", "size", "seed", "negative_prompt", "steps", "guidance")
                  if body.get(key) is not None}
        drawn = images_generate(tenant_id=self.tenant.id, model=body.get("model"), prompt=body.get("prompt"),
                                params=params)
        data = []
        for number, (encoded, review) in enumerate(zip(drawn["images"], drawn["reviews"])):
            moderation = {"lode_moderation": review} if review else {}
            if encoded is None:  # held for review
                data.append({"b64_json": None, "url": None, "revised_prompt": None, **moderation})
                continue
            if response_format == "b64_json":
                data.append({"b64_json": encoded, "revised_prompt": None, **moderation})
                continue
            key = f"generated/{drawn['id']}/{number}.png"
            artifacts.object_put(tenant_id=self.tenant.id, key=key, data=base64.b64decode(encoded),
                                 content_type="image/png")
            data.append({"url": artifacts.presigned_get_url(tenant_id=self.tenant.id, key=key), "revised_prompt": None,
                         **moderation})
        return Response({"created": int(timezone.now().timestamp()), "data": data})
