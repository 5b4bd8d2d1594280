"""Batch generation jobs (web side): one output per row of a ready dataset version, written as the
dataset's next version, flagged synthetic, by a `generation.batch` job on the gpu queue (its
handler is workers.generation.batch). Everything the job needs is checked and frozen here: the
model (resolved to its stored base and adapter), the template (a snapshot: editing it later does
not change a running job), which field feeds the prompt and which receives the output, and the
sampling parameters; the estimate (input and output tokens) is admitted against the quotas (402)."""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError as DjangoValidationError

from lode.core.errors import Conflict, NotFound, ValidationFailed
from lode.core.models import Job
from tenants.db_context import tenant_atomic
from tenants.services import actor_api_key, actor_user, audit_record

from .completions import CHARS_PER_TOKEN, sampling_params_check, served_model_resolve, size_class

BATCH_KIND = "generation.batch"
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Without a template, the field whose text is the prompt, by modality (chat: the conversation up
# to its last assistant turn).
DEFAULT_INPUT = {"text": "text", "instruction": "prompt", "classification": "text", "preference": "prompt",
                 "chat": "messages"}
MAX_BATCH_ROWS = 1_000_000


def _text_fields(version) -> tuple[set[str], set[str]]:
    """The version's text fields of its modality, and its extra (text) columns."""
    from lode.datasets.schemas import modality_get

    modality = modality_get(version.modality)
    text = {field.name for field in modality.fields if field.kind == "text"}
    extra = set((version.schema or {}).get("extra_columns") or [])
    return text, extra


def generation_job_create(*, tenant_id: UUID | str, by: Any, model: Any, version_id: Any, template: Any = None,
                          input_field: str | None = None, output_field: str = "generated",
                          params: dict[str, Any] | None = None) -> Job:
    from lode.datasets import services as dataset_services
    from lode.datasets.models import DatasetVersion

    from .prompts import template_use

    served = served_model_resolve(tenant_id=tenant_id, name=model)
    clean = sampling_params_check(params or {})
    with tenant_atomic(tenant_id):
        try:
            parent = DatasetVersion.objects.select_related("dataset").get(id=version_id)
        except (DatasetVersion.DoesNotExist, ValueError, TypeError, DjangoValidationError):
            raise NotFound("version: no such dataset version", details={"field": "version"}) from None
    if parent.status != DatasetVersion.Status.READY:
        raise Conflict(f"version: the version is {parent.status}; generation needs a ready version",
                       details={"field": "version", "status": parent.status})
    if parent.modality not in DEFAULT_INPUT:
        raise ValidationFailed(f"version: a {parent.modality} version has no text to prompt with",
                               details={"field": "version"})
    if parent.row_count > MAX_BATCH_ROWS:
        raise ValidationFailed(f"version: at most {MAX_BATCH_ROWS} rows a job", details={"field": "version"})
    text_fields, extra = _text_fields(parent)
    readable = text_fields | extra

    frozen_template = None
    if template is not None and input_field:
        raise ValidationFailed("input_field: with a template, rows fill its variables; give one or the other",
                               details={"field": "input_field"})
    if template is not None:
        use, constants = template_use(tenant_id=tenant_id, spec=template)
        unfilled = [name for name in use.shape.variables
                    if name not in readable and name not in use.shape.defaults and name not in constants]
        if unfilled:
            raise ValidationFailed(
                f"template: the variable {unfilled[0]} is neither a text field of the version ({', '.join(sorted(readable))}) "
                "nor given a value", details={"field": "template"})
        frozen_template = {"name": use.name, "version": use.version, "template": use.shape.template,
                           "system": use.shape.system, "defaults": use.shape.defaults, "constants": constants,
                           "examples": use.examples, "max_examples": use.max_examples}
    else:
        input_field = input_field or DEFAULT_INPUT[parent.modality]
        if input_field not in readable and not (parent.modality == "chat" and input_field == "messages"):
            raise ValidationFailed(f"input_field: not a text field of the version ({', '.join(sorted(readable))})",
                                   details={"field": "input_field"})
    if not isinstance(output_field, str) or not FIELD_NAME.match(output_field):
        raise ValidationFailed("output_field: a column name (letters, digits, _)", details={"field": "output_field"})
    from lode.datasets.schemas import modality_get

    other_fields = set(modality_get(parent.modality).field_names) - text_fields
    if output_field in other_fields or output_field == "split":
        raise ValidationFailed(f"output_field: {output_field} is not a text field; name a text field to replace or a new "
                               "column", details={"field": "output_field"})

    mean_chars = (((parent.stats or {}).get("sample") or {}).get("chars") or {}).get("mean")
    input_chars = int(mean_chars * parent.row_count) if mean_chars else int(parent.size_bytes)
    if frozen_template:
        input_chars += parent.row_count * (len(frozen_template["template"]) + len(frozen_template["system"]) + sum(
            len(str(example)) for example in frozen_template["examples"][: frozen_template["max_examples"]]))
    job_params = {
        "source_version_id": str(parent.id),
        "model": {"name": served.name, "base": served.base, "adapter": served.adapter,
                  "size_class": size_class(served.parameter_count)},
        "template": frozen_template, "input_field": input_field, "output_field": output_field, "params": clean,
        "estimate_tokens": {"input": max(input_chars // CHARS_PER_TOKEN, 1), "output": parent.row_count * clean["max_tokens"]},
    }
    version_params = {"model": served.name, "template": {"name": frozen_template["name"], "version": frozen_template["version"]}
                      if frozen_template else None, "input_field": input_field, "output_field": output_field, "params": clean}
    with tenant_atomic(tenant_id):
        parent = DatasetVersion.objects.select_related("dataset").get(id=parent.id)
        version = dataset_services.version_derive(tenant_id=tenant_id, parent=parent, operation="generate",
                                                  params=version_params, by=by, job_kind=BATCH_KIND,
                                                  job_params=job_params, is_synthetic=True)
        audit_record(tenant_id=tenant_id, action="generation.batch_created", user=actor_user(by), api_key=actor_api_key(by),
                     target=version.job, data={"model": served.name, "source_version": str(parent.id),
                                               "version": str(version.id), "rows": parent.row_count})
    return version.job


def batch_params_validate(params: dict[str, Any]) -> dict[str, Any]:
    """The job kind's check: batch jobs are made by generation_job_create, which checks the request
    against the database; this re-checks the shape of what it wrote."""
    expected = {"version_id", "source_version_id", "model", "template", "input_field", "output_field", "params",
                "estimate_tokens"}
    if set(params) != expected:
        raise ValidationFailed("params: create generation jobs through /api/v1/generation-jobs", details={"field": "params"})
    return {**params, "params": sampling_params_check(params["params"])}


def batch_usage_estimate(params: dict[str, Any]) -> list[tuple[str, str, Any]]:
    size = params["model"]["size_class"]
    return [("input_tokens", size, Decimal(params["estimate_tokens"]["input"])),
            ("output_tokens", size, Decimal(params["estimate_tokens"]["output"]))]


def generation_job_get(*, tenant_id: UUID | str, job_id: UUID | str) -> Job:
    with tenant_atomic(tenant_id):
        job = Job.objects.filter(id=job_id, kind=BATCH_KIND).first()
    if job is None:
        raise NotFound("No such generation job.")
    return job


def generation_job_cancel(*, tenant_id: UUID | str, job_id: UUID | str, by: Any = None) -> Job:
    from lode.core.jobs import services as job_services

    generation_job_get(tenant_id=tenant_id, job_id=job_id)
    with tenant_atomic(tenant_id):
        job = job_services.job_cancel(tenant_id=tenant_id, job_id=job_id)
        audit_record(tenant_id=tenant_id, action="generation.batch_cancelled", user=actor_user(by),
                     api_key=actor_api_key(by), target=job)
    return job
