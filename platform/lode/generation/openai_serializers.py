"""Shapes of the OpenAI-compatible API: its ids (reversible encodings of Lode's UUIDs), its input
serializers, and Lode's objects rendered as OpenAI's file, fine-tuning job, event, checkpoint and
model objects. No logic beyond the mapping: services and selectors do the work."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from rest_framework import serializers

from lode.core.errors import NotFound, ValidationFailed

FILE_PREFIX = "file-"
JOB_PREFIX = "ftjob-"
EVENT_PREFIX = "ftevent-"
CHECKPOINT_PREFIX = "ftckpt-"
PLATFORM_OWNER = "lode"  # owned_by of the platform's catalog models

# Lode job state -> OpenAI fine-tuning job status (the same words today; kept as a table on purpose).
JOB_STATUS = {"queued": "queued", "running": "running", "succeeded": "succeeded", "failed": "failed",
              "cancelled": "cancelled"}
# Dataset version status -> OpenAI file status.
FILE_STATUS = {"building": "uploaded", "ready": "processed", "failed": "error"}


# --- Ids ----------------------------------------------------------------------------------------


def file_id_for(version_id: uuid.UUID | str) -> str:
    return FILE_PREFIX + uuid.UUID(str(version_id)).hex


def job_id_for(job_id: uuid.UUID | str) -> str:
    return JOB_PREFIX + uuid.UUID(str(job_id)).hex


def checkpoint_id_for(checkpoint_id: uuid.UUID | str) -> str:
    return CHECKPOINT_PREFIX + uuid.UUID(str(checkpoint_id)).hex


def _uuid_from(value: Any, prefix: str) -> uuid.UUID | None:
    if not isinstance(value, str) or not value.startswith(prefix):
        return None
    text = value[len(prefix):]
    if len(text) != 32:
        return None
    try:
        return uuid.UUID(hex=text)
    except ValueError:
        return None


def version_id_from_file_id(file_id: Any) -> uuid.UUID | None:
    """The dataset version a file id names; None for anything that is not a file id."""
    return _uuid_from(file_id, FILE_PREFIX)


def job_uuid_from(fine_tuning_job_id: Any, *, message: str = "No such fine-tuning job.") -> uuid.UUID:
    """The core Job id a fine-tuning job id names; a malformed id reads as a missing job (404)."""
    found = _uuid_from(fine_tuning_job_id, JOB_PREFIX)
    if found is None:
        raise NotFound(message)
    return found


def event_seq_from(event_id: Any) -> int | None:
    if isinstance(event_id, str) and event_id.startswith(EVENT_PREFIX) and event_id[len(EVENT_PREFIX):].isdigit():
        return int(event_id[len(EVENT_PREFIX):])
    return None


def _ts(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


# --- Input --------------------------------------------------------------------------------------


class FileCreateInput(serializers.Serializer):
    file = serializers.FileField()
    purpose = serializers.CharField(max_length=40)


class MethodInput(serializers.Serializer):
    type = serializers.CharField(max_length=20)
    supervised = serializers.DictField(required=False, allow_null=True)
    dpo = serializers.DictField(required=False, allow_null=True)
    reinforcement = serializers.DictField(required=False, allow_null=True)


class FineTuningJobCreateInput(serializers.Serializer):
    model = serializers.CharField(max_length=200)
    training_file = serializers.CharField(max_length=100)
    validation_file = serializers.CharField(max_length=100, required=False, allow_null=True, allow_blank=True)
    hyperparameters = serializers.DictField(required=False, allow_null=True)
    method = MethodInput(required=False, allow_null=True)
    suffix = serializers.CharField(max_length=64, required=False, allow_null=True, allow_blank=True)
    seed = serializers.JSONField(required=False, allow_null=True)
    metadata = serializers.DictField(required=False, allow_null=True)  # accepted, not kept
    integrations = serializers.ListField(required=False, allow_null=True)  # accepted, not used


def list_params(query_params, *, default_limit: int, max_limit: int) -> tuple[str | None, int]:
    """`after` and `limit` of OpenAI's cursor lists; a bad limit is a 400 naming it."""
    raw = query_params.get("limit")
    limit = default_limit
    if raw not in (None, ""):
        try:
            limit = int(raw)
        except ValueError:
            raise ValidationFailed("limit: a whole number", details={"field": "limit"}) from None
        if not 1 <= limit <= max_limit:
            raise ValidationFailed(f"limit: from 1 to {max_limit}", details={"field": "limit"})
    return (query_params.get("after") or None), limit


# --- Output -------------------------------------------------------------------------------------


def list_body(data: list[dict], *, has_more: bool | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"object": "list", "data": data}
    if has_more is not None:
        body.update(has_more=has_more, first_id=data[0]["id"] if data else None,
                    last_id=data[-1]["id"] if data else None)
    return body


def file_object(version) -> dict[str, Any]:
    """A dataset version as OpenAI's file: the upload it came from (or, for a version an operation
    made, its rows as JSONL), its status while the ingest runs, and why it failed."""
    upload = version.upload
    if upload is not None and version.operation == "upload":
        filename, size = upload.filename, upload.size or 0
    else:
        filename, size = f"{version.dataset.name}-v{version.number}.jsonl", version.size_bytes
    status = FILE_STATUS.get(version.status, "error")
    details = None
    if status == "error":
        details = str((version.report or {}).get("error") or "The file could not be processed.")
    elif status == "processed" and (version.report or {}).get("rejected"):
        details = f"{version.report['rejected']} lines were rejected; {version.row_count} rows were kept."
    return {"id": file_id_for(version.id), "object": "file", "bytes": int(size), "created_at": _ts(version.created_at),
            "filename": filename, "purpose": "fine-tune", "status": status, "status_details": details,
            "expires_at": None}


def file_deleted(file_id: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "deleted": True}


def _multiplier(hp: dict[str, Any], method: str) -> float | None:
    from lode.training.hyperparameters import METHOD_DEFAULTS

    default = METHOD_DEFAULTS.get(method, {}).get("learning_rate")
    rate = hp.get("learning_rate")
    return round(rate / default, 6) if rate and default else None


def fine_tuning_job_object(job, *, fine_tuned_model: str | None = None) -> dict[str, Any]:
    params = job.params or {}
    result = job.result or {}
    hp = params.get("hyperparameters") or {}
    method = params.get("method", "lora")
    hyperparameters = {"n_epochs": hp.get("epochs"), "batch_size": hp.get("batch_size"),
                       "learning_rate_multiplier": _multiplier(hp, method)}
    method_type = "dpo" if params.get("task") == "dpo" else "supervised"
    method_hp = dict(hyperparameters)
    if method_type == "dpo":
        method_hp["beta"] = hp.get("dpo_beta")
    error = None
    if job.state == "failed":
        error = {"code": job.error_code or "failed", "message": job.error or "The fine-tune failed.", "param": None}
    estimated_finish = None
    eta = job.eta_seconds
    if eta is not None and job.state in ("queued", "running"):
        from django.utils import timezone

        estimated_finish = int(timezone.now().timestamp() + eta)
    tokens = (result.get("metrics") or {}).get("tokens")
    validation = params.get("validation_version_id")
    return {
        "id": job_id_for(job.id), "object": "fine_tuning.job", "created_at": _ts(job.created_at),
        "error": error, "fine_tuned_model": fine_tuned_model or result.get("model"),
        "finished_at": _ts(job.finished_at), "hyperparameters": hyperparameters, "model": params.get("base_model", ""),
        "organization_id": f"org-{uuid.UUID(str(job.tenant_id)).hex}", "result_files": [], "seed": hp.get("seed"),
        "status": JOB_STATUS.get(job.state, job.state), "trained_tokens": int(tokens) if tokens is not None else None,
        "training_file": file_id_for(params["train_version_id"]) if params.get("train_version_id") else "",
        "validation_file": file_id_for(validation) if validation else None, "estimated_finish": estimated_finish,
        "integrations": [], "metadata": None, "user_provided_suffix": params.get("suffix") or None,
        "method": {"type": method_type, method_type: {"hyperparameters": method_hp}},
    }


def _metrics_view(data: dict[str, Any]) -> dict[str, Any]:
    """A metric event's values with OpenAI's names beside Lode's."""
    values = {key: value for key, value in data.items() if key != "kind"}
    if "loss" in data:
        values["train_loss"] = data["loss"]
    if "val_loss" in data:
        values["valid_loss"] = data["val_loss"]
    return values


def fine_tuning_event_object(event) -> dict[str, Any]:
    data = event.data or {}
    if event.kind == "metric":
        kind, payload = "metrics", _metrics_view(data)
    else:
        kind, payload = "message", data
    failed = event.kind == "state" and data.get("state") == "failed"
    return {"id": f"{EVENT_PREFIX}{event.id}", "object": "fine_tuning.job.event", "created_at": _ts(event.created_at),
            "level": "error" if failed else "info", "message": event.message or event.kind, "type": kind,
            "data": payload}


def fine_tuning_checkpoint_object(checkpoint, *, job_id, model_name: str | None, train: dict | None,
                                  evaluation: dict | None) -> dict[str, Any]:
    """`train` and `evaluation`: the job's last metric events at or before the checkpoint's step."""
    summary = checkpoint.summary or {}
    metrics: dict[str, Any] = {"step": checkpoint.step}
    if train and train.get("loss") is not None:
        metrics["train_loss"] = train["loss"]
    if evaluation and evaluation.get("val_loss") is not None:
        metrics["valid_loss"] = evaluation["val_loss"]
    if summary.get("best_val_loss") is not None:
        metrics["full_valid_loss"] = summary["best_val_loss"]
    name = model_name or job_id_for(job_id)
    return {"id": checkpoint_id_for(checkpoint.id), "object": "fine_tuning.job.checkpoint",
            "created_at": _ts(checkpoint.created_at), "fine_tuned_model_checkpoint": f"{name}:ckpt-step-{checkpoint.step}",
            "fine_tuning_job_id": job_id_for(job_id), "metrics": metrics, "step_number": checkpoint.step}


def model_object(*, name: str, created: datetime, owned_by: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _ts(created), "owned_by": owned_by}
