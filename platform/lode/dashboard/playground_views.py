"""The generation playground: pick one of the tenant's text or image models (its fine-tunes and the
base models it may use), type a prompt or fill a stored prompt template, set the sampling or image
parameters, and watch the answer stream in with the safety verdicts.

The page is a TenantPageView (generation:read). Its two actions are JSON endpoints the page's
script calls with the session and its CSRF token (DRF's session authentication enforces it), so a
refusal (a bad parameter, an unknown model, a 402 from quota admission, a role without
generation:write) comes back in Lode's one error body, `{"error": {"code", "message", "details":
{"field"}}}`, rendered by the API's exception handler. A text answer streams as server-sent events
in the playground's own small shape:

    event: start    {"id", "model", "template": {"name", "version"} | null}
    event: verdict  the prompt's verdict {"action", "allowed", "flagged", "held", "blocked", "categories",
                    "policy_version", "item_id"}
    event: delta    {"text"}                      (as the model writes; all at once when held, below)
    event: done     {"finish_reason", "usage": {"prompt_tokens", "completion_tokens", "total_tokens"},
                     "verdict": the output's verdict}
    event: error    {"message", "field", "status"} (in place of done)

With a safety check registered (completions.SAFETY_HOOKS) the text is held until the output's
verdict, as in the OpenAI-compatible API: a blocked output, or one held for a reviewer, is never
sent (finish_reason content_filter); a redacted one is sent as the check rewrote it. The template
preview uses the API's own POST /api/v1/prompt-templates/<name>/render (session auth is on)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from lode.core.errors import LodeError, ValidationFailed
from lode.generation import completions, prompts
from lode.training import selectors as training_selectors
from tenants.authentication import SessionAuthentication
from tenants.db_context import tenant_atomic
from tenants.scoping import TenantScopedMixin

from .views import TenantPageView

TEXT = "causal_lm"
IMAGE = "text_to_image"
TUNED_MODELS_OFFERED = 200
SAMPLING_KEYS = ("max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed", "stop")
IMAGE_KEYS = ("n", "size", "steps", "guidance", "seed", "negative_prompt")
MODES = ("chat", "completion")
# What the page offers before anyone changes a field: short answers, the tiny models' sizes.
DEFAULT_MAX_TOKENS = 64
IMAGE_SIZES = ("64x64", "128x128", "256x256", "512x512", "768x768", "1024x1024")


# --- Plain values for the page ---------------------------------------------------------------------


def playground_models(*, tenant_id: Any) -> dict[str, list[dict[str, Any]]]:
    """The models the tenant can generate with, by kind: its fine-tunes (newest first) and the
    base models (the catalog and its uploads) of each task type the playground serves."""
    with tenant_atomic(tenant_id):
        tuned = list(training_selectors.tuned_model_list(tenant_id=tenant_id)
                     .filter(task_type__in=(TEXT, IMAGE))[:TUNED_MODELS_OFFERED])
    groups: dict[str, list[dict[str, Any]]] = {"text_tuned": [], "text_base": [], "image_tuned": [], "image_base": []}
    for model in tuned:
        kind = "text" if model.task_type == TEXT else "image"
        groups[f"{kind}_tuned"].append({"name": model.name, "kind": kind,
                                        "label": f"{model.name} (fine-tune of {model.base_model.name})"})
    for task_type, kind in ((TEXT, "text"), (IMAGE, "image")):
        for base in training_selectors.base_model_list(task_type=task_type, tenant_id=tenant_id):
            groups[f"{kind}_base"].append({"name": base.name, "kind": kind,
                                           "label": f"{base.display_name} ({base.name})"})
    return groups


def playground_templates(*, tenant_id: Any) -> list[dict[str, Any]]:
    """The tenant's prompt templates as the page's script needs them: variables with defaults."""
    return [
        {"name": template.name, "version": template.version, "variables": list(template.variables or []),
         "defaults": dict(template.defaults or {}), "system": template.system, "template": template.template,
         "description": template.description,
         "example_set": template.example_set.name if template.example_set else None,
         "max_examples": template.max_examples}
        for template in prompts.template_list(tenant_id=tenant_id)
    ]


class PlaygroundView(TenantPageView):
    template_name = "dashboard/generation/playground.html"
    nav_active = "playground"
    read_permission = "generation:read"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        models = playground_models(tenant_id=self.tenant.id)
        context.update(
            models=models,
            has_models=any(models.values()),
            templates=playground_templates(tenant_id=self.tenant.id),
            can_write=self.can("generation:write"),
            default_max_tokens=DEFAULT_MAX_TOKENS,
            max_tokens_limit=completions.MAX_TOKENS_LIMIT,
            image_sizes=IMAGE_SIZES,
            max_images=completions.MAX_IMAGES,
        )
        return context


# --- The two actions ---------------------------------------------------------------------------------


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationFailed(f"{key}: text", details={"field": key})
    return value


def _params(body: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's parameters, unset ones (null or "") left out so the service's defaults
    apply; a key the playground does not offer is refused, naming it."""
    params = body.get("params")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ValidationFailed("params: an object of parameters", details={"field": "params"})
    for key in params:
        if key not in allowed:
            raise ValidationFailed(f"{key}: not a parameter here ({', '.join(allowed)})", details={"field": key})
    return {key: value for key, value in params.items() if value is not None and value != ""}


def verdict_data(verdict: completions.Verdict) -> dict[str, Any]:
    """A verdict for the page (never the text a redaction gives: that is sent as the answer)."""
    return {**verdict.as_dict(), "blocked": not verdict.allowed}


def _usage(usage: dict[str, Any]) -> dict[str, int]:
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _error_data(exc: LodeError) -> dict[str, Any]:
    details = exc.details if isinstance(exc.details, dict) else {}
    return {"message": exc.message, "field": details.get("field"), "status": exc.http_status}


class PlaygroundActionView(TenantScopedMixin, APIView):
    """A playground action: the dashboard's session only (no API keys), CSRF enforced, the
    generation area's permission (these are POSTs: generation:write), errors in Lode's body."""

    authentication_classes = [SessionAuthentication]
    required_area = "generation"
    # What AreaPermission requires of a POST in this area, declared as the dashboard's pages
    # declare theirs (the role matrix in tests/tenants reads it).
    write_permission = "generation:write"
    http_method_names = ["post"]

    def body(self) -> dict[str, Any]:
        if not isinstance(self.request.data, dict):
            raise ValidationFailed("body: a JSON object", details={"field": "body"})
        return self.request.data


class PlaygroundStreamView(PlaygroundActionView):
    """POST {"model", "mode": chat|completion, "system", "prompt", "template": {"name",
    "variables"} | null, "params": {max_tokens, temperature, top_p, top_k, repetition_penalty,
    seed, stop}}: everything is checked and admitted before the stream starts (a refusal is a JSON
    4xx); then the answer as server-sent events (module docstring). In chat mode the system box and
    the prompt are a system and a user message (after the template's messages when one is
    filled); in completion mode the prompt, or the filled template, is the text to continue."""

    @extend_schema(exclude=True)
    def post(self, request):
        body = self.body()
        mode = body.get("mode") or "chat"
        if mode not in MODES:
            raise ValidationFailed("mode: chat or completion", details={"field": "mode"})
        system, prompt = _text(body, "system"), _text(body, "prompt")
        template = body.get("template") or None
        chat = mode == "chat"
        if template is not None and system.strip():
            raise ValidationFailed("system: a template brings its own system prompt; leave this empty",
                                   details={"field": "system"})
        if chat:
            messages = ([{"role": "system", "content": system}] if system.strip() else []) + (
                [{"role": "user", "content": prompt}] if prompt.strip() else [])
            if not messages and template is None:
                raise ValidationFailed("prompt: type a prompt or choose a template", details={"field": "prompt"})
            inputs: dict[str, Any] = {"messages": messages}
        else:
            if system.strip():
                raise ValidationFailed("system: a text completion has no system prompt", details={"field": "system"})
            inputs = {"prompt": prompt or None}
        tenant_id = self.tenant.id
        run = completions.completion_start(tenant_id=tenant_id, model=body.get("model"),
                                           params=_params(body, SAMPLING_KEYS), template=template, chat=chat, **inputs)
        response = StreamingHttpResponse(_answer_events(run, tenant_id=tenant_id), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


def _answer_events(run: completions.Completion, *, tenant_id: Any) -> Iterator[bytes]:
    yield _event("start", {"id": run.id, "model": run.model.name, "template": run.template})
    yield _event("verdict", verdict_data(run.prompt_verdict))
    # Released as completions.completion_stream allows (as produced, after the output's verdict,
    # or sentence by sentence, by the tenant's policy).
    try:
        for kind, *rest in completions.completion_stream(run, tenant_id=tenant_id):
            if kind == "delta":
                yield _event("delta", {"text": rest[0]})
            elif kind == "error":
                yield _event("error", {"message": rest[0], "field": "prompt", "status": 400})
                return
            else:
                done, verdict, finish = rest
    except LodeError as exc:  # the server did not answer in time (503)
        yield _event("error", _error_data(exc))
        return
    yield _event("done", {"finish_reason": finish, "usage": _usage(done.get("usage") or {}),
                          "verdict": verdict_data(verdict)})


class PlaygroundImagesView(PlaygroundActionView):
    """POST {"model", "prompt", "params": {n, size, steps, guidance, seed, negative_prompt}}:
    {"id", "model", "images": [a PNG's data URL, or null for one held for review], "reviews":
    [each image's moderation, or null], "verdict": the prompt's verdict}."""

    @extend_schema(exclude=True)
    def post(self, request):
        body = self.body()
        drawn = completions.images_generate(tenant_id=self.tenant.id, model=body.get("model"), prompt=body.get("prompt"),
                                            params=_params(body, IMAGE_KEYS))
        images = drawn["images"]
        return Response({
            "id": drawn["id"], "model": drawn["model"],
            "images": [f"data:image/png;base64,{encoded}" if encoded is not None else None for encoded in images],
            "reviews": drawn.get("reviews") or [None] * len(images),
            "verdict": verdict_data(drawn["prompt_verdict"]),
        })
