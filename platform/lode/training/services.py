"""Writes of the model registry and fine-tunes. Base models: the files go to the artifact store (platform scope) first,
then the row is written; a row therefore never points at files that were not uploaded."""
from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from lode.core import artifacts
from lode.core.errors import NotFound, ValidationFailed
from lode.core.models import Job
from tenants.db_context import tenant_atomic
from tenants.services import actor_api_key, actor_user, audit_record
from workers.tiny_models.manifest import MANIFEST_FILENAME, files_revision, folder_files

from .models import BaseModel, BaseModelSource, TrainingCheckpoint, TunedModel

logger = logging.getLogger(__name__)

BASE_MODELS_PREFIX = "base-models"
# Called by finetune_create with (tenant_id=, task=, versions=[train, validation?]) before the job
# is written; see lode.safety.training_data.
ADMISSION_CHECKS: list = []


def base_model_artifact_prefix(*, name: str) -> str:
    return f"{BASE_MODELS_PREFIX}/{name}"


def _validation_failed(exc: ValidationError) -> ValidationFailed:
    fields = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
    first_field, messages = next(iter(fields.items()))
    return ValidationFailed(f"{first_field}: {messages[0]}", details={"fields": fields})


def base_model_register(
    *,
    name: str,
    display_name: str,
    task_type: str,
    architecture: str,
    parameter_count: int,
    local_dir: Path,
    manifest: dict[str, Any] | None = None,
    source: str = BaseModelSource.BUILTIN,
) -> BaseModel:
    """Uploads every file of `local_dir` (a Hugging Face-format folder) to
    `base-models/<name>/<file>` in the platform scope, then creates or updates the catalog row.

    The stored manifest always lists the files actually uploaded (size and SHA-256) and their
    revision, whatever `manifest` said; loaders use it to fetch and verify the folder."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise ValidationFailed(f"local_dir: {local_dir} is not a folder", details={"field": "local_dir"})
    files = folder_files(local_dir)
    if not files:
        raise ValidationFailed(f"local_dir: {local_dir} holds no files", details={"field": "local_dir"})
    full_manifest = {**(manifest or {}), "files": files, "revision": files_revision(files)}
    prefix = base_model_artifact_prefix(name=name)
    fields = {
        "display_name": display_name,
        "task_type": task_type,
        "architecture": architecture,
        "parameter_count": parameter_count,
        "artifact_prefix": prefix,
        "manifest": full_manifest,
        "source": source,
    }
    # Validate before uploading, so a bad name never becomes a stray S3 prefix.
    try:
        BaseModel(name=name, **fields).full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        raise _validation_failed(exc) from None

    uploaded = {f"{prefix}/{entry['path']}" for entry in files}
    for entry in files:
        artifacts.file_put(tenant_id=None, key=f"{prefix}/{entry['path']}", path=local_dir / entry["path"])
    if (local_dir / MANIFEST_FILENAME).is_file():
        uploaded.add(f"{prefix}/{MANIFEST_FILENAME}")
        artifacts.file_put(tenant_id=None, key=f"{prefix}/{MANIFEST_FILENAME}", path=local_dir / MANIFEST_FILENAME)

    with transaction.atomic():
        now = timezone.now()
        base_model = BaseModel.objects.select_for_update().filter(name=name, tenant__isnull=True).first()
        if base_model is None:
            base_model = BaseModel(name=name, created_at=now)
        for field, value in fields.items():
            setattr(base_model, field, value)
        base_model.updated_at = now
        try:
            base_model.full_clean()
        except ValidationError as exc:
            raise _validation_failed(exc) from None
        base_model.save()

    # Files of an earlier registration that this one no longer has; the row (committed above)
    # no longer lists them, so nothing loads them.
    for stale in artifacts.object_list(tenant_id=None, prefix=prefix):
        if stale.key not in uploaded:
            artifacts.object_delete(tenant_id=None, key=stale.key)
    logger.info("base model registered", extra={"base_model": name, "files": len(files)})
    return base_model


# --- Fine-tunes -----------------------------------------------------------------------------------

FINETUNE_KIND = "training.finetune"
MAX_GPUS = 8
# The task a base model's type implies when the request names none; a causal LM trained on
# preference pairs is a DPO fine-tune.
_DEFAULT_TASK = {"causal_lm": "sft", "sequence_classification": "classification", "text_to_image": "text_to_image"}


def _field_error(field: str, message: str, **details: Any) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details={"field": field, **details})


def _ready_version(tenant_id, version_id: Any, field: str):
    from lode.datasets.models import DatasetVersion

    if not version_id:
        raise _field_error(field, "a dataset version id is required")
    with tenant_atomic(tenant_id):
        try:
            version = DatasetVersion.objects.select_related("dataset").get(id=version_id)
        except (DatasetVersion.DoesNotExist, ValueError, ValidationError):
            raise _field_error(field, f"no dataset version {version_id!r} in this organization") from None
    if version.status != DatasetVersion.Status.READY:
        raise _field_error(field, f"the version is {version.status}; fine-tunes need a ready version")
    if version.row_count == 0:
        raise _field_error(field, "the version has no rows")
    return version


def finetune_create(
    *, tenant_id: UUID | str, by: Any, base_model: str, train_version_id: Any, validation_version_id: Any = None,
    task: str | None = None, method: str = "lora", hyperparameters: dict | None = None, suffix: str = "",
    gpus: int = 1,
) -> Job:
    """Checks the request (base model, dataset versions, task, method, hyperparameters), estimates
    its GPU time and enqueues the fine-tune job; the quota check on the estimate may refuse it (402)."""
    from django.conf import settings

    from lode.core.jobs import services as job_services

    from .hyperparameters import TASKS, compute_estimate, hyperparameters_validate, method_check, task_check
    from .selectors import base_model_get

    if not isinstance(base_model, str) or not base_model:
        raise _field_error("base_model", "the name of a base model")
    try:
        base = base_model_get(name=base_model, tenant_id=tenant_id)
    except NotFound:
        raise _field_error("base_model", f"no base model named {base_model!r}") from None
    train = _ready_version(tenant_id, train_version_id, "train_version")
    implied = not task
    task = task or ("dpo" if base.task_type == "causal_lm" and train.modality == "preference" else _DEFAULT_TASK[base.task_type])
    task = task_check(task)
    if implied and train.modality not in TASKS[task][1]:
        fitting = sorted({needs for needs, modalities in TASKS.values() if train.modality in modalities})
        raise _field_error("base_model", f"{base.name} is a {base.task_type} model; {train.modality} data trains "
                                         f"a {' or '.join(fitting)} model")
    method = method_check(task, method)
    needs_type, modalities = TASKS[task]
    if base.task_type != needs_type:
        raise _field_error("base_model", f"{task} fine-tunes need a {needs_type} model; {base.name} is {base.task_type}")
    if train.modality not in modalities:
        raise _field_error("train_version", f"{task} fine-tunes train on {' or '.join(modalities)} data; "
                                            f"this version is {train.modality}")
    validation = None
    if validation_version_id:
        validation = _ready_version(tenant_id, validation_version_id, "validation_version")
        if validation.modality != train.modality:
            raise _field_error("validation_version", f"the validation data is {validation.modality}, "
                                                     f"the training data {train.modality}")
    hp = hyperparameters_validate(task, method, hyperparameters)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_GPUS:
        raise _field_error("gpus", f"an integer from 1 to {MAX_GPUS}")
    if task == "text_to_image" and gpus != 1:
        raise _field_error("gpus", "text_to_image fine-tunes run on one GPU")
    if not isinstance(suffix, str) or len(suffix) > 40 or (suffix and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", suffix)):
        raise _field_error("suffix", "up to 40 lowercase letters, digits and hyphens")
    # Checks other capabilities add (lode.safety: the share of flagged training rows against the
    # tenant's policy); each raises a 4xx with its report to refuse.
    for check in ADMISSION_CHECKS:
        check(tenant_id=tenant_id, task=task, versions=[version for version in (train, validation) if version is not None])
    # Characters to train on: the sampled mean length times the rows (the stored bytes without stats).
    mean_chars = (((train.stats or {}).get("sample") or {}).get("chars") or {}).get("mean")
    train_chars = int(mean_chars * train.row_count) if mean_chars else int(train.size_bytes)
    estimate = compute_estimate(
        gpu_class=settings.GPU_CLASS, parameter_count=base.parameter_count, train_chars=train_chars, epochs=hp["epochs"],
        method=method, gpus=gpus, max_steps=hp["max_steps"], batch_tokens=hp["batch_size"] * hp["max_seq_length"],
    )
    params = {
        "base_model": base.name, "task": task, "method": method, "train_version_id": str(train.id),
        "validation_version_id": str(validation.id) if validation else None, "hyperparameters": hp,
        "suffix": suffix, "gpus": gpus, "estimate": estimate,
    }
    with tenant_atomic(tenant_id):
        job = job_services.job_create(tenant_id=tenant_id, created_by=actor_user(by), kind=FINETUNE_KIND, params=params)
        audit_record(tenant_id=tenant_id, action="training.finetune_created", user=actor_user(by), api_key=actor_api_key(by),
                     target=job, data={"base_model": base.name, "task": task, "method": method,
                                       "train_version": str(train.id)})
    return job


def finetune_params_validate(params: dict[str, Any]) -> dict[str, Any]:
    """The job kind's check: fine-tune jobs are made by finetune_create, which validates the
    request against the database; this re-checks the shape of what it wrote."""
    from .hyperparameters import hyperparameters_validate, method_check, task_check

    expected = {"base_model", "task", "method", "train_version_id", "validation_version_id", "hyperparameters",
                "suffix", "gpus", "estimate"}
    if set(params) != expected:
        raise ValidationFailed("params: create fine-tunes through /api/v1/fine-tunes", details={"field": "params"})
    task = task_check(params["task"])
    method = method_check(task, params["method"])
    return {**params, "hyperparameters": hyperparameters_validate(task, method, params["hyperparameters"])}


def finetune_usage_estimate(params: dict[str, Any]) -> list[tuple[str, str, Any]]:
    estimate = params["estimate"]
    return [("gpu_seconds", estimate["gpu_class"], estimate["gpu_seconds"])]


def finetune_cancel(*, tenant_id: UUID | str, job_id: UUID | str, by: Any = None) -> Job:
    from lode.core.jobs import services as job_services

    from .selectors import finetune_get

    finetune_get(tenant_id=tenant_id, job_id=job_id)  # 404 for anything but this tenant's fine-tunes
    with tenant_atomic(tenant_id):
        job = job_services.job_cancel(tenant_id=tenant_id, job_id=job_id)
        audit_record(tenant_id=tenant_id, action="training.finetune_cancelled", user=actor_user(by),
                     api_key=actor_api_key(by), target=job)
    return job


def checkpoint_record(*, tenant_id: UUID | str, job_id: UUID | str, step: int, key: str, size_bytes: int,
                      summary: dict[str, Any]) -> TrainingCheckpoint:
    """The worker's record of a checkpoint it has stored (a re-run of the same step replaces it)."""
    with tenant_atomic(tenant_id):
        checkpoint, _ = TrainingCheckpoint.objects.update_or_create(
            job_id=job_id, step=step,
            defaults={"tenant_id": tenant_id, "key": key, "size_bytes": size_bytes, "summary": summary},
        )
    return checkpoint


def tuned_model_prefix(model_id: UUID | str) -> str:
    return f"models/{model_id}"


def tuned_model_register(
    *, tenant_id: UUID | str, job_id: UUID | str, model_id: UUID | str, local_dir: Path, fields: dict[str, Any],
) -> TunedModel:
    """Stores the trained model's folder under models/<id>/ (tenant scope) and writes its row; a
    job that registers again (resumed after its upload) gets the row it already wrote."""
    with tenant_atomic(tenant_id):
        existing = TunedModel.objects.filter(job_id=job_id).first()
    if existing is not None:
        return existing
    files = folder_files(Path(local_dir))
    prefix = tuned_model_prefix(model_id)
    for entry in files:
        artifacts.file_put(tenant_id=tenant_id, key=f"{prefix}/{entry['path']}", path=Path(local_dir) / entry["path"])
    manifest = {"files": files, "revision": files_revision(files)}
    with tenant_atomic(tenant_id):
        job = Job.objects.get(id=job_id)
        model = TunedModel(id=model_id, tenant_id=tenant_id, job=job, artifact_prefix=prefix, manifest=manifest,
                           created_by_id=job.created_by_id, **fields)
        try:
            model.full_clean(exclude=["tenant", "created_by", "job", "train_version", "validation_version", "base_model"])
        except ValidationError as exc:
            raise _validation_failed(exc) from None
        model.save()
        audit_record(tenant_id=tenant_id, action="training.model_registered", target=model,
                     actor_label=f"job:{job_id}", data={"name": model.name, "job": str(job_id)})
    return model


# --- A tenant's own base models -------------------------------------------------------------------


def base_model_upload(*, tenant_id: UUID | str, by: Any, name: str, display_name: str, file) -> BaseModel:
    """A tenant's Hugging Face-format checkpoint (a zip of its folder): checked (see
    checkpoint_upload), stored under the tenant's base-models/<id>/, then registered for that tenant
    only. Nothing is stored when a check fails; the 4xx names the file or rule."""
    import tempfile

    from django.conf import settings

    from lode.core.errors import PayloadTooLarge

    from .checkpoint_upload import CheckpointRefused, checkpoint_read

    name = (name or "").strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,99}", name):
        raise _field_error("name", "1 to 100 lowercase letters, digits and hyphens")
    if BaseModel.objects.filter(name=name, tenant__isnull=True).exists():
        raise _field_error("name", f"{name!r} is a catalog model's name")
    with tenant_atomic(tenant_id):
        if BaseModel.objects.filter(name=name, tenant_id=tenant_id).exists():
            raise _field_error("name", f"you already have a base model named {name!r}")
    limit = settings.MODEL_UPLOAD_MAX_BYTES
    if file is None:
        raise _field_error("file", "a zip of the model folder")
    if file.size is not None and file.size > limit:
        raise PayloadTooLarge(f"file: larger than the {limit} byte limit", details={"field": "file", "limit_bytes": limit})
    temporary = checkpoint = None
    path = getattr(file, "temporary_file_path", None)
    if path is None:
        temporary = tempfile.NamedTemporaryFile(suffix=".zip", delete=False)
        for chunk in file.chunks():
            temporary.write(chunk)
        temporary.close()
        zip_path = temporary.name
    else:
        zip_path = path()
    try:
        try:
            checkpoint = checkpoint_read(zip_path, max_bytes=limit)
        except CheckpointRefused as exc:
            raise ValidationFailed(f"file: {exc.message}", details={"field": "file", "path": exc.path,
                                                                    "rule": exc.code}) from None
        model_id = uuid.uuid4()
        prefix = f"{BASE_MODELS_PREFIX}/{model_id}"
        files = folder_files(checkpoint.folder)
        try:
            for entry in files:
                artifacts.file_put(tenant_id=tenant_id, key=f"{prefix}/{entry['path']}", path=checkpoint.folder / entry["path"])
            with tenant_atomic(tenant_id):
                model = BaseModel(
                    id=model_id, tenant_id=tenant_id, name=name, display_name=(display_name or name)[:200],
                    task_type=checkpoint.task_type, architecture=checkpoint.architecture[:200],
                    parameter_count=checkpoint.parameter_count, artifact_prefix=prefix,
                    manifest={"files": files, "revision": files_revision(files), "model_type": checkpoint.model_type},
                    source=BaseModelSource.UPLOADED,
                )
                model.save()
                audit_record(tenant_id=tenant_id, action="training.base_model_uploaded", user=actor_user(by),
                             api_key=actor_api_key(by), target=model,
                             data={"name": name, "architecture": model.architecture, "parameters": model.parameter_count})
        except BaseException:
            artifacts.prefix_delete(tenant_id=tenant_id, prefix=prefix)
            raise
        return model
    finally:
        if temporary is not None:
            os.unlink(temporary.name)
        if checkpoint is not None:
            shutil.rmtree(checkpoint.folder, ignore_errors=True)


def base_model_delete(*, tenant_id: UUID | str, by: Any, base_model_id: UUID | str) -> None:
    """Removes one of the tenant's uploads; refused (409) while a fine-tuned model needs it."""
    from lode.core.errors import Conflict

    with tenant_atomic(tenant_id):
        try:
            model = BaseModel.objects.select_for_update().get(id=base_model_id, tenant_id=tenant_id)
        except (BaseModel.DoesNotExist, ValueError, ValidationError):
            raise NotFound("No such base model of yours.") from None
        if TunedModel.objects.filter(base_model_id=model.id).exists():
            raise Conflict("Fine-tuned models are built on this base model; it is kept.",
                           details={"base_model": model.name})
        prefix = model.artifact_prefix
        audit_record(tenant_id=tenant_id, action="training.base_model_deleted", user=actor_user(by),
                     api_key=actor_api_key(by), target=model, data={"name": model.name})
        model.delete()
    artifacts.prefix_delete(tenant_id=tenant_id, prefix=prefix)
