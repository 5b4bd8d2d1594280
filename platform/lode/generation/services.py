"""Writes of the OpenAI-compatible API, mapped onto Lode's own services: a fine-tune file becomes a
dataset and its first version (datasets.services), a fine-tuning job a fine-tune
(training.services.finetune_create) with OpenAI's hyperparameters translated. Errors stay
lode.core.errors, with details.field named in OpenAI's terms (the `param` of its error body)."""
from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction

from lode.core.errors import Conflict, NotFound, ValidationFailed
from lode.datasets import selectors as dataset_selectors
from lode.datasets import services as dataset_services
from lode.training import selectors as training_selectors
from lode.training import services as training_services
from lode.training.hyperparameters import METHOD_DEFAULTS, SPECS

from .openai_serializers import job_uuid_from, version_id_from_file_id

FILE_PURPOSES = ("fine-tune",)
SNIFF_BYTES = 1024 * 1024
LODE_METHOD = "lora"  # OpenAI's API has no LoRA/full choice; Lode trains a LoRA adapter


def _invalid(param: str, message: str, *, code: str | None = None) -> ValidationFailed:
    error = ValidationFailed(f"{param}: {message}", details={"field": param})
    if code:
        error.code = code
    return error


# --- Files ----------------------------------------------------------------------------------------


def _jsonl_modality(file) -> tuple[str, dict[str, str]]:
    """The dataset modality (and column mapping) of an OpenAI fine-tuning JSONL file, from its first
    record: chat ("messages"), instruction (prompt/completion; completion is the response) or
    preference (prompt/chosen/rejected)."""
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    if isinstance(head, str):
        head = head.encode()
    lines = head.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    for number, line in enumerate(lines, start=1):
        if line.strip():
            break
    else:
        raise _invalid("file", "the file holds no JSONL records")
    if number == len(lines) and len(head) >= SNIFF_BYTES:
        raise _invalid("file", f"line {number} is longer than {SNIFF_BYTES} bytes")
    try:
        record = json.loads(line)
    except ValueError:
        raise _invalid("file", f"line {number} is not JSON; fine-tuning files are JSONL, one JSON object a line") from None
    if not isinstance(record, dict):
        raise _invalid("file", f"line {number} is not a JSON object")
    keys = set(record)
    if "messages" in keys:
        return "chat", {}
    if {"prompt", "completion"} <= keys:
        return "instruction", {"response": "completion"}
    if {"prompt", "chosen", "rejected"} <= keys:
        return "preference", {}
    if {"input", "preferred_output", "non_preferred_output"} <= keys:
        raise _invalid("file", "OpenAI's DPO record format is not supported yet; write preference pairs as "
                               "{\"prompt\", \"chosen\", \"rejected\"} lines")
    raise _invalid("file", f"line {number} is none of the fine-tuning formats: {{\"messages\"}} (chat), "
                           "{\"prompt\", \"completion\"} or {\"prompt\", \"chosen\", \"rejected\"}")


def openai_file_create(*, tenant_id: UUID | str, by: Any, file, purpose: str):
    """A fine-tuning file: a new dataset of the file's modality and its first version, ingested by a
    job (the file reads "uploaded" until the version is ready). Nothing is kept when it is refused."""
    if purpose not in FILE_PURPOSES:
        raise _invalid("purpose", f"{purpose!r} is not accepted; Lode takes files for {', '.join(FILE_PURPOSES)}")
    if file is None:
        raise _invalid("file", "a JSONL file")
    modality, mapping = _jsonl_modality(file)
    stem = os.path.basename((file.name or "upload.jsonl").replace("\\", "/"))[:150] or "upload.jsonl"
    with transaction.atomic():  # the dataset goes too when its upload is refused
        dataset = dataset_services.dataset_create(
            tenant_id=tenant_id, name=f"{stem} ({uuid.uuid4().hex[:8]})", modality=modality, by=by,
            description=f"Uploaded through the OpenAI-compatible API (/v1/files, purpose {purpose}).",
        )
        _upload, version = dataset_services.upload_direct(tenant_id=tenant_id, dataset_id=dataset.id, file=file,
                                                          declared_format="jsonl", column_mapping=mapping, by=by)
    return version


def openai_file_delete(*, tenant_id: UUID | str, by: Any, file_id: str) -> None:
    """Deletes the file's dataset version (and its dataset when nothing else is left in it); 409
    while a fine-tuned model or an unfinished fine-tune uses it."""
    version_id = version_id_from_file_id(file_id)
    if version_id is None:
        raise NotFound("No such file.")
    dataset_selectors.version_get(tenant_id=tenant_id, version_id=version_id)  # 404 for missing and not yours
    training = training_selectors.finetune_list(tenant_id=tenant_id).filter(state__in=("queued", "running"))
    busy = (training.filter(params__train_version_id=str(version_id)).exists()
            or training.filter(params__validation_version_id=str(version_id)).exists())
    if busy:
        raise Conflict("A fine-tuning job that has not finished uses this file; it is kept.", details={"field": "file_id"})
    try:
        dataset_services.version_delete(tenant_id=tenant_id, version_id=version_id, by=by)
    except Conflict as exc:
        raise Conflict(exc.message, details={**exc.details, "field": "file_id"}) from None


# --- Fine-tuning jobs ---------------------------------------------------------------------------

# Lode's field -> OpenAI's parameter, for errors finetune_create raises.
_FIELD_PARAMS = {"base_model": "model", "train_version": "training_file", "validation_version": "validation_file",
                 "task": "method.type", "method": "method.type", "hyperparameters": "hyperparameters",
                 "suffix": "suffix", "gpus": "model"}


def _hyperparameters(given: Any, path: str, *, dpo: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """OpenAI's hyperparameters as Lode's, and which OpenAI parameter each Lode key came from.
    "auto" (or null) keeps Lode's default; Lode's own hyperparameter names pass through."""
    if given is None:
        return {}, {}
    if not isinstance(given, dict):
        raise _invalid(path, "an object")
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for key, value in given.items():
        param = f"{path}.{key}"
        if value is None or value == "auto":
            continue
        if key in ("n_epochs", "batch_size"):
            lode_key = "epochs" if key == "n_epochs" else "batch_size"
        elif key == "learning_rate_multiplier":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise _invalid(param, "a number above 0, or \"auto\"")
            value, lode_key = float(value) * METHOD_DEFAULTS[LODE_METHOD]["learning_rate"], "learning_rate"
        elif key == "beta" and dpo:
            lode_key = "dpo_beta"
        elif key in SPECS:
            lode_key = key
        else:
            known = "batch_size, learning_rate_multiplier, n_epochs" + (", beta" if dpo else "")
            raise _invalid(param, f"unknown; OpenAI's are {known} (Lode's own names are accepted too)")
        values[lode_key] = value
        origins[f"hyperparameters.{lode_key}"] = param
    return values, origins


def _ready_file(*, tenant_id: UUID | str, file_id: Any, param: str) -> UUID:
    """The dataset version a job's file names, once it is ready: a file still being ingested is
    waited for (OPENAI_FILE_WAIT_SECONDS); a failed, missing or unfinished one is a 400 naming param."""
    version_id = version_id_from_file_id(file_id)
    if version_id is None:
        raise _invalid(param, f"{file_id!r} is not a file id (file-<32 hex digits>)")
    deadline = time.monotonic() + settings.OPENAI_FILE_WAIT_SECONDS
    while True:
        try:
            version = dataset_selectors.version_get(tenant_id=tenant_id, version_id=version_id)
        except NotFound:
            raise _invalid(param, f"no file {file_id} in this organization") from None
        if version.status != "building":
            break
        if time.monotonic() >= deadline:
            raise _invalid(param, f"the file {file_id} is still being processed; try again shortly", code="file_not_ready")
        time.sleep(0.5)
    if version.status == "failed":
        error = (version.report or {}).get("error") or "unknown error"
        raise _invalid(param, f"the file {file_id} could not be processed: {error}", code="invalid_file")
    return version.id


def openai_finetune_create(
    *, tenant_id: UUID | str, by: Any, model: str, training_file: str, validation_file: str | None = None,
    hyperparameters: dict | None = None, method: dict | None = None, suffix: str | None = None, seed: Any = None,
):
    """fine_tuning.jobs.create onto finetune_create: model -> base_model, files -> dataset versions,
    hyperparameters (n_epochs, batch_size, learning_rate_multiplier x the method's default rate),
    method supervised (the task the base model and data imply) or dpo, suffix, seed."""
    method_type, method_values, method_origins = "supervised", {}, {}
    if method:
        method_type = method.get("type")
        if method_type not in ("supervised", "dpo"):
            raise _invalid("method.type", "supervised or dpo (reinforcement fine-tuning is not offered)")
        inner = method.get(method_type) or {}
        if not isinstance(inner, dict):
            raise _invalid(f"method.{method_type}", "an object")
        method_values, method_origins = _hyperparameters(inner.get("hyperparameters"),
                                                         f"method.{method_type}.hyperparameters", dpo=method_type == "dpo")
    values, origins = _hyperparameters(hyperparameters, "hyperparameters", dpo=method_type == "dpo")
    values.update(method_values)  # the method's hyperparameters win, as in OpenAI's API
    origins.update(method_origins)
    if seed is not None:
        values["seed"] = seed
        origins["hyperparameters.seed"] = "seed"
    # The model first: a wrong name is answered at once, not after waiting for the file.
    try:
        training_selectors.base_model_get(name=model, tenant_id=tenant_id)
    except NotFound:
        try:
            training_selectors.tuned_model_get(tenant_id=tenant_id, name=model)
        except NotFound:
            raise _invalid("model", f"the model {model!r} does not exist or you do not have access to it",
                           code="model_not_found") from None
        raise _invalid("model", f"{model} is a fine-tuned model; fine-tuning one again is not offered yet, "
                                "name its base model", code="model_not_supported") from None
    train_version_id = _ready_file(tenant_id=tenant_id, file_id=training_file, param="training_file")
    validation_version_id = (_ready_file(tenant_id=tenant_id, file_id=validation_file, param="validation_file")
                             if validation_file else None)
    try:
        return training_services.finetune_create(
            tenant_id=tenant_id, by=by, base_model=model, train_version_id=train_version_id,
            validation_version_id=validation_version_id, task="dpo" if method_type == "dpo" else None,
            method=LODE_METHOD, hyperparameters=values, suffix=suffix or "", gpus=1,
        )
    except ValidationFailed as exc:
        field = str(exc.details.get("field") or "")
        param = origins.get(field) or _FIELD_PARAMS.get(field) or field or None
        message = exc.message
        if param and field and message.startswith(f"{field}:"):
            message = f"{param}:{message[len(field) + 1:]}"
        error = ValidationFailed(message, details={**exc.details, "field": param})
        if field == "base_model" and "no base model named" in exc.message:
            error.code = "model_not_found"
        raise error from None


def openai_finetune_cancel(*, tenant_id: UUID | str, by: Any, fine_tuning_job_id: str):
    """Cancels the fine-tune (a running one stops at its next step); 409 once it has finished."""
    return training_services.finetune_cancel(tenant_id=tenant_id, job_id=job_uuid_from(fine_tuning_job_id), by=by)
