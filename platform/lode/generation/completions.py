"""Text generation for a tenant: resolve the model (a fine-tuned model of the tenant, served as an
adapter on its base or whole; a catalog or uploaded base model), check the sampling parameters,
pass the prompt through the safety hook, admit the estimated tokens against the tenant's quotas
(402), run it on the generation server, pass the output through the safety hook, and meter the
tokens it really used through billing's one metering call."""
from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from lode.core.errors import NotFound, ValidationFailed

from .engine_client import engine_request

MAX_TOKENS_LIMIT = 4096
CHARS_PER_TOKEN = 4
# Joins a chat's messages for the prompt check; a redacted text splits back on it.
MESSAGE_SEPARATOR = "\n\u241e\n"


@dataclass
class Verdict:
    allowed: bool = True
    flagged: bool = False
    categories: dict[str, float] = field(default_factory=dict)
    policy_version: int | None = None
    action: str = "allow"  # allow | flag | block | redact
    text: str | None = None  # the text to use instead (personal data redacted); None: as it was
    held: bool = False  # a flagged output withheld until a reviewer releases it
    item_id: str | None = None  # the moderation item a flag made
    # How a streamed output is released (a prompt's verdict says it for the answer): "live" as it
    # is produced (no safety check registered), "end" only after the output's verdict, "sentences"
    # sentence by sentence, each released once the text up to it passes the check.
    stream: str = "live"

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "allowed": self.allowed, "flagged": self.flagged, "held": self.held,
                "categories": self.categories, "policy_version": self.policy_version, "item_id": self.item_id}


# The safety capability (lode.safety) registers its check here when its app is ready (kind
# "prompt" or "output"); without one, every text passes.
SAFETY_HOOKS: list[Callable[..., Verdict]] = []


# Generated images routed to review by the policy (lode.safety registers it): hook(tenant_id=,
# prompt=, prompt_flagged=, images=[PNG bytes], ref=, context=) -> per image None or {"item_id", "held"}.
IMAGE_REVIEW_HOOKS: list[Callable[..., list]] = []


def safety_review(*, tenant_id: UUID | str, kind: str, text: str, ref: str = "",
                  context: dict[str, Any] | None = None) -> Verdict:
    verdict = Verdict()
    for hook in SAFETY_HOOKS:
        verdict = hook(tenant_id=tenant_id, kind=kind, text=text, ref=ref, context=context)
        if not verdict.allowed or verdict.flagged or verdict.text is not None:
            return verdict
    return verdict


def size_class(parameter_count: int) -> str:
    """Billing's model size classes by parameter count."""
    if parameter_count <= 1_000_000_000:
        return "tiny"
    if parameter_count <= 8_000_000_000:
        return "small"
    if parameter_count <= 40_000_000_000:
        return "medium"
    return "large"


@dataclass(frozen=True)
class ServedModel:
    name: str
    base: dict[str, Any]
    adapter: dict[str, Any] | None
    parameter_count: int
    owned_by: str


def served_model_resolve(*, tenant_id: UUID | str, name: Any, task_type: str = "causal_lm") -> ServedModel:
    """The model a request names, of the given task type: the tenant's fine-tuned model (a LoRA
    adapter served on its base, or a full/merged model served whole), else a base model the
    tenant may use (the catalog or its own upload)."""
    from lode.training.selectors import base_model_get, tuned_model_get

    what = "text generation" if task_type == "causal_lm" else "image"
    if not isinstance(name, str) or not name:
        raise ValidationFailed(f"model: the name of a {what} model", details={"field": "model"})
    try:
        tuned = tuned_model_get(tenant_id=tenant_id, name=name)
    except NotFound:
        tuned = None
    if tuned is not None:
        if tuned.task_type != task_type:
            raise ValidationFailed(f"model: {name} is a {tuned.task_type} model, not a {what} model",
                                   details={"field": "model"})
        base = tuned.base_model
        if tuned.is_adapter:
            return ServedModel(name=name, base=_stored(base.name, base.tenant_id, base.artifact_prefix, base.manifest),
                               adapter={"id": str(tuned.id), "prefix": tuned.artifact_prefix, "manifest": tuned.manifest},
                               parameter_count=base.parameter_count, owned_by="tenant")
        return ServedModel(name=name, base=_stored(tuned.name, str(tenant_id), tuned.artifact_prefix, tuned.manifest),
                           adapter=None, parameter_count=base.parameter_count, owned_by="tenant")
    try:
        base = base_model_get(name=name, tenant_id=tenant_id)
    except NotFound:
        raise NotFound(f"model: no model named {name!r}", details={"field": "model"}) from None
    if base.task_type != task_type:
        raise ValidationFailed(f"model: {name} is a {base.task_type} model, not a {what} model",
                               details={"field": "model"})
    return ServedModel(name=name, base=_stored(base.name, base.tenant_id, base.artifact_prefix, base.manifest),
                       adapter=None, parameter_count=base.parameter_count,
                       owned_by="tenant" if base.tenant_id else "lode")


def _stored(name: str, tenant_id: Any, prefix: str, manifest: dict) -> dict[str, Any]:
    return {"name": name, "tenant_id": str(tenant_id) if tenant_id else None, "prefix": prefix, "manifest": manifest}


def _number(params: dict, key: str, low: float, high: float, default: float, *, integer: bool = False,
            low_open: bool = False) -> float | int:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ValidationFailed(f"{key}: {'an integer' if integer else 'a number'}", details={"field": key})
    if value < low or (low_open and value == low) or value > high:
        bound = f"above {low:g}" if low_open else f"at least {low:g}"
        raise ValidationFailed(f"{key}: {bound} and at most {high:g}", details={"field": key})
    return value


# OpenAI's limit on stop sequences; each is searched for in the text after every token on the
# shared engine thread, so its length is capped too.
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 128
# A batch job adds the row number to the seed: the sum must still be a 64-bit seed.
MAX_SEED = 2**63 - 1 - 10**6


def _seed(params: dict[str, Any]) -> int | None:
    seed = params.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise ValidationFailed(f"seed: an integer from 0 to {MAX_SEED}", details={"field": "seed"})
    return seed


def sampling_params_check(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise ValidationFailed("params: an object of sampling parameters", details={"field": "params"})
    stop = params.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > MAX_STOP_SEQUENCES or not all(
            isinstance(item, str) and 0 < len(item) <= MAX_STOP_CHARS for item in stop)):
        raise ValidationFailed(f"stop: a string or a list of up to {MAX_STOP_SEQUENCES} strings, each of 1 to "
                               f"{MAX_STOP_CHARS} characters", details={"field": "stop"})
    seed = _seed(params)
    return {
        "max_tokens": _number(params, "max_tokens", 1, MAX_TOKENS_LIMIT, 64, integer=True),
        "temperature": _number(params, "temperature", 0, 2, 1.0),
        "top_p": _number(params, "top_p", 0, 1, 1.0, low_open=True),
        "top_k": _number(params, "top_k", 0, 100_000, 0, integer=True),
        "repetition_penalty": _number(params, "repetition_penalty", 0, 10, 1.0, low_open=True),
        "stop": stop or [],
        "seed": seed,
    }


@dataclass
class Completion:
    id: str
    model: ServedModel
    events: Iterator[dict[str, Any]]
    prompt_verdict: Verdict
    template: dict[str, Any] | None = None  # {"name", "version"} of the template the request filled
    messages: list[dict[str, str]] | None = None  # what the model was given, after the template
    prompt: str | None = None


def completion_start(*, tenant_id: UUID | str, model: Any, messages: list | None = None, prompt: str | None = None,
                     params: dict[str, Any] | None = None, template: Any = None, chat: bool | None = None) -> Completion:
    """Checks everything and admits the request; its events come as the server produces them
    (iterating them meters the usage at the end). With a `template` (see prompts.template_use) the
    rendered template comes first: for a chat, as messages before the request's own; for a
    completion, as the whole prompt."""
    from lode.billing.services import UsageEstimate, usage_admit

    served = served_model_resolve(tenant_id=tenant_id, name=model)
    clean = sampling_params_check(params or {})
    chat = messages is not None if chat is None else chat
    used = None
    if template is not None:
        from .prompts import template_use

        if not chat and prompt:
            raise ValidationFailed("prompt: give a prompt or a template, not both", details={"field": "prompt"})
        use, values = template_use(tenant_id=tenant_id, spec=template)
        rendered = use.render(values)
        used = {"name": use.name, "version": use.version}
        if chat:
            if messages is not None and not isinstance(messages, list):
                raise ValidationFailed("messages: a list of {role, content}", details={"field": "messages"})
            messages = rendered.messages() + list(messages or [])
        else:
            prompt = rendered.prompt()
    if chat:
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
                for m in messages):
            raise ValidationFailed("messages: a non-empty list of {role: system|user|assistant, content: text}",
                                   details={"field": "messages"})
        text = MESSAGE_SEPARATOR.join(message["content"] for message in messages)
        payload_input: dict[str, Any] = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    else:
        if not isinstance(prompt, str) or not prompt:
            raise ValidationFailed("prompt: the text to continue", details={"field": "prompt"})
        text = prompt
        payload_input = {"prompt": prompt}
    completion_id = uuid.uuid4().hex
    context = {"model": served.name, "template": used}
    verdict = safety_review(tenant_id=tenant_id, kind="prompt", text=text, ref=completion_id, context=context)
    if not verdict.allowed:
        raise _refused(verdict, field="prompt")
    if verdict.text is not None:  # personal data redacted before the model sees it
        if chat:
            payload_input["messages"] = _messages_redacted(tenant_id=tenant_id, messages=payload_input["messages"],
                                                           verdict=verdict, ref=completion_id, context=context)
        else:
            payload_input["prompt"] = verdict.text
    size = size_class(served.parameter_count)
    usage_admit(tenant_id=tenant_id, estimate=[
        UsageEstimate(meter="input_tokens", dimension=size, quantity=Decimal(max(len(text) // CHARS_PER_TOKEN, 1))),
        UsageEstimate(meter="output_tokens", dimension=size, quantity=Decimal(clean["max_tokens"])),
    ])
    payload = {"tenant_id": str(tenant_id), "base": served.base, "adapter": served.adapter, "params": clean,
               **payload_input}
    return Completion(id=completion_id, model=served, prompt_verdict=verdict, template=used,
                      messages=payload_input.get("messages"), prompt=payload_input.get("prompt"),
                      events=_metered(tenant_id, completion_id, size, engine_request(payload),
                                      input_estimate=max(len(text) // CHARS_PER_TOKEN, 1)))


def _refused(verdict: Verdict, *, field: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: refused by the organization's safety policy",
                            details={"field": field, "categories": verdict.categories,
                                     "policy_version": verdict.policy_version})


def _messages_redacted(*, tenant_id: UUID | str, messages: list[dict[str, str]], verdict: Verdict, ref: str,
                       context: dict[str, Any]) -> list[dict[str, str]]:
    """The messages with the joined text's redactions. Where the redacted text cannot be split back
    message by message (a message holds the separator, or a redaction took one), each message is
    reviewed and redacted on its own: an unredacted message never reaches the model."""
    parts = verdict.text.split(MESSAGE_SEPARATOR)
    if len(parts) == len(messages) and not any(MESSAGE_SEPARATOR in m["content"] for m in messages):
        return [{**m, "content": part} for m, part in zip(messages, parts)]
    redacted = []
    for index, message in enumerate(messages):
        own = safety_review(tenant_id=tenant_id, kind="prompt", text=message["content"], ref=f"{ref}#{index}",
                            context=context)
        if not own.allowed:
            raise _refused(own, field="prompt")
        redacted.append({**message, "content": own.text if own.text is not None else message["content"]})
    return redacted


def _metered(tenant_id, completion_id: str, size: str, events: Iterator[dict[str, Any]], *,
             input_estimate: int) -> Iterator[dict[str, Any]]:
    """The events, metered at the end with the usage the server counted. A client that goes away
    mid-stream (the response closed before the end) is billed for what it was sent: the prompt as
    estimated at admission and one token a text delta (the server emits a delta for each token that
    settles text, so this is a lower bound); a request that never produced text is not billed."""
    from lode.billing.services import UsageInput, usage_record

    def record(input_tokens: int, output_tokens: int) -> None:
        usage_record(tenant_id=tenant_id, events=[
            UsageInput(meter=meter, dimension=size, quantity=quantity, idempotency_key=f"generation:{completion_id}:{part}",
                       source_type="request", source_id=completion_id)
            for meter, part, quantity in (("input_tokens", "input", input_tokens), ("output_tokens", "output", output_tokens))
            if quantity  # a request that failed before generating used nothing
        ])

    finished, deltas = False, 0
    try:
        for event in events:
            if event.get("done"):
                finished = True
                usage = event.get("usage") or {}
                record(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
            elif event.get("delta"):
                deltas += 1
            yield event
    except GeneratorExit:
        if not finished and deltas:
            record(input_estimate, deltas)
        raise


def completion_text(completion: Completion, *, tenant_id: UUID | str) -> dict[str, Any]:
    """Runs a completion to its end: the whole text, why it ended, usage, and the output's verdict
    (a blocked output is never returned)."""
    pieces, done = [], {}
    for event in completion.events:
        if event.get("done"):
            done = event
        else:
            pieces.append(event["delta"])
    if done.get("finish_reason") == "error":
        raise ValidationFailed(f"generation: {done.get('error')}", details={"field": "prompt"})
    text, verdict = output_review(completion, tenant_id=tenant_id, text="".join(pieces))
    return {"text": text, "finish_reason": "content_filter" if verdict_withholds(verdict) else done.get("finish_reason"),
            "usage": done.get("usage") or {}, "verdict": verdict}


STREAM_BOUNDARIES = ".!?。！？\n"
STREAM_MIN_CHARS = 24
STREAM_MAX_CHARS = 240


def completion_stream(completion: Completion, *, tenant_id: UUID | str) -> Iterator[tuple[str, Any]]:
    """A completion's text as it may be delivered: ("delta", text)…, then ("done", done event,
    output verdict, finish reason) or ("error", message). How much is held back follows the
    prompt verdict's `stream` mode: live (no check registered), end (nothing before the
    output's verdict: a blocked or held output never shows a token), or sentences (the text up
    to a sentence end is released once it passes a check; after a check that does not pass,
    nothing more is released until the final verdict). The final verdict is recorded as for a
    whole answer."""
    mode = completion.prompt_verdict.stream if SAFETY_HOOKS else "live"
    released, pending, done = "", "", {}
    checking = mode == "sentences"
    for event in completion.events:
        if event.get("done"):
            done = event
            break
        if mode == "live":
            yield "delta", event["delta"]
            released += event["delta"]
            continue
        pending += event["delta"]
        if checking and len(pending) >= STREAM_MIN_CHARS and (
                any(mark in event["delta"] for mark in STREAM_BOUNDARIES) or len(pending) >= STREAM_MAX_CHARS):
            partial = safety_review(tenant_id=tenant_id, kind="output_partial", text=released + pending)
            if partial.action == "allow":
                yield "delta", pending
                released, pending = released + pending, ""
            else:
                checking = False  # hold the rest for the final verdict
    if done.get("finish_reason") == "error":
        yield "error", f"generation: {done.get('error')}"
        return
    if mode == "live":
        text, verdict = output_review(completion, tenant_id=tenant_id, text=released)
        yield "done", done, verdict, "content_filter" if verdict_withholds(verdict) else done.get("finish_reason")
        return
    text, verdict = output_review(completion, tenant_id=tenant_id, text=released + pending)
    if text.startswith(released) and len(text) > len(released):
        yield "delta", text[len(released):]
    withheld = verdict_withholds(verdict) or not text.startswith(released)
    yield "done", done, verdict, "content_filter" if withheld else done.get("finish_reason")


def verdict_withholds(verdict: Verdict) -> bool:
    return not verdict.allowed or verdict.held


def output_review(completion: Completion, *, tenant_id: UUID | str, text: str) -> tuple[str, Verdict]:
    """The output's verdict and the text to deliver: nothing when blocked or held for review, the
    redacted text when the policy redacts."""
    verdict = safety_review(tenant_id=tenant_id, kind="output", text=text, ref=completion.id,
                            context={"model": completion.model.name, "template": completion.template,
                                     "prompt": completion.prompt if completion.prompt is not None else completion.messages})
    if verdict_withholds(verdict):
        return "", verdict
    return (verdict.text if verdict.text is not None else text), verdict


# --- Images ---------------------------------------------------------------------------------------

MAX_IMAGE_SIDE = 1024
MAX_IMAGES = 4


def image_params_check(params: dict[str, Any]) -> dict[str, Any]:
    size = params.get("size") or "512x512"
    try:
        width, height = (int(side) for side in str(size).lower().split("x"))
    except ValueError:
        raise ValidationFailed("size: WIDTHxHEIGHT, e.g. 512x512", details={"field": "size"}) from None
    if not (8 <= width <= MAX_IMAGE_SIDE and 8 <= height <= MAX_IMAGE_SIDE) or width % 8 or height % 8:
        raise ValidationFailed(f"size: each side a multiple of 8 from 8 to {MAX_IMAGE_SIDE}", details={"field": "size"})
    negative = params.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise ValidationFailed("negative_prompt: text", details={"field": "negative_prompt"})
    seed = _seed(params)
    return {"n": _number(params, "n", 1, MAX_IMAGES, 1, integer=True), "width": width, "height": height,
            "steps": _number(params, "steps", 1, 150, 20, integer=True),
            "guidance": _number(params, "guidance", 0, 30, 7.5), "seed": seed, "negative_prompt": negative}


def images_generate(*, tenant_id: UUID | str, model: Any, prompt: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Images for a prompt: checked, admitted (the images meter, 402), drawn on the generation
    server, metered; returns {"model", "images": [base64 PNG], "id"}."""
    from lode.billing.services import UsageEstimate, UsageInput, usage_admit, usage_record

    served = served_model_resolve(tenant_id=tenant_id, name=model, task_type="text_to_image")
    clean = image_params_check(params or {})
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationFailed("prompt: the text to draw", details={"field": "prompt"})
    request_id = uuid.uuid4().hex
    verdict = safety_review(tenant_id=tenant_id, kind="prompt", text=prompt, ref=request_id,
                            context={"model": served.name, "kind": "image"})
    if not verdict.allowed:
        raise _refused(verdict, field="prompt")
    if verdict.text is not None:
        prompt = verdict.text
    # The negative prompt is the request's text too (it steers the picture): reviewed as a prompt.
    negative_verdict = Verdict()
    if clean["negative_prompt"] and clean["negative_prompt"].strip():
        negative_verdict = safety_review(tenant_id=tenant_id, kind="prompt", text=clean["negative_prompt"],
                                         ref=f"{request_id}#negative_prompt",
                                         context={"model": served.name, "kind": "image", "field": "negative_prompt"})
        if not negative_verdict.allowed:
            raise _refused(negative_verdict, field="negative_prompt")
        if negative_verdict.text is not None:
            clean = {**clean, "negative_prompt": negative_verdict.text}
    size = size_class(served.parameter_count)
    usage_admit(tenant_id=tenant_id, estimate=[UsageEstimate(meter="images", dimension=size, quantity=Decimal(clean["n"]))])
    done = {}
    for event in engine_request({"kind": "image", "tenant_id": str(tenant_id), "base": served.base,
                                 "adapter": served.adapter, "prompt": prompt, "params": clean}):
        if event.get("done"):
            done = event
    if done.get("finish_reason") == "error":
        raise ValidationFailed(f"generation: {done.get('error')}", details={"field": "prompt"})
    images = done.get("images") or []
    if images:
        usage_record(tenant_id=tenant_id, events=[UsageInput(
            meter="images", dimension=size, quantity=len(images), idempotency_key=f"generation:{request_id}:images",
            source_type="request", source_id=request_id)])
    reviews: list = [None] * len(images)
    for hook in IMAGE_REVIEW_HOOKS:
        reviews = hook(tenant_id=tenant_id, prompt=prompt, prompt_flagged=verdict.flagged or negative_verdict.flagged,
                       ref=request_id,
                       images=[base64.b64decode(image) for image in images], context={"model": served.name})
    # A held image is not handed out: a reviewer releases it (or purges it) later.
    images = [None if review and review.get("held") else image for image, review in zip(images, reviews)]
    return {"id": request_id, "model": served.name, "images": images, "reviews": reviews,
            "prompt_verdict": verdict}
