"""Reads of the OpenAI-compatible API, through datasets' and training's selectors, always within
one tenant: "missing" and "another tenant's" are the same 404."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

from lode.core import artifacts
from lode.core.errors import NotFound, ValidationFailed
from lode.datasets import selectors as dataset_selectors
from lode.training import selectors as training_selectors

from .openai_serializers import (
    PLATFORM_OWNER,
    checkpoint_id_for,
    event_seq_from,
    job_uuid_from,
    model_object,
    version_id_from_file_id,
)


def _page(items: list, limit: int) -> tuple[list, bool]:
    return items[:limit], len(items) > limit


# --- Files ----------------------------------------------------------------------------------------


def openai_file_get(*, tenant_id: UUID | str, file_id: str):
    """The dataset version a file id names (any of the tenant's versions is a file)."""
    version_id = version_id_from_file_id(file_id)
    if version_id is None:
        raise NotFound("No such file.")
    try:
        version = dataset_selectors.version_get(tenant_id=tenant_id, version_id=version_id)
    except NotFound:
        raise NotFound("No such file.") from None
    return version


def openai_file_list(*, tenant_id: UUID | str, after: str | None, limit: int, order: str,
                     purpose: str | None) -> tuple[list, bool]:
    if purpose and purpose != "fine-tune":
        return [], False
    versions = dataset_selectors.version_list(tenant_id=tenant_id)
    if order == "asc":
        versions = versions.order_by("created_at", "id")
    if after:
        anchor = openai_file_get(tenant_id=tenant_id, file_id=after)
        if order == "asc":
            versions = versions.filter(created_at__gte=anchor.created_at).exclude(created_at=anchor.created_at, id__lte=anchor.id)
        else:
            versions = versions.filter(created_at__lte=anchor.created_at).exclude(created_at=anchor.created_at, id__gte=anchor.id)
    return _page(list(versions[:limit + 1]), limit)


def openai_file_content(*, tenant_id: UUID | str, file_id: str) -> tuple[Iterator[bytes], str]:
    """The bytes of the file as uploaded; for a version an operation made, its rows as JSONL."""
    version = openai_file_get(tenant_id=tenant_id, file_id=file_id)
    upload = version.upload if version.operation == "upload" else None
    if upload is not None:
        artifacts.object_head(tenant_id=tenant_id, key=upload.key)  # 404 now, not halfway through the body
        return artifacts.object_stream(tenant_id=tenant_id, key=upload.key), "application/octet-stream"
    if version.status != "ready":
        raise NotFound("The file has no content yet.")
    return dataset_selectors.version_export(tenant_id=tenant_id, version_id=version.id, fmt="jsonl"), "application/jsonl"


# --- Models ---------------------------------------------------------------------------------------


def openai_model_list(*, tenant) -> list[dict[str, Any]]:
    """The tenant's fine-tuned models (newest first), then the base models it may fine-tune: the
    platform's catalog (owned by "lode") and its own uploads."""
    tuned = [model_object(name=model.name, created=model.created_at, owned_by=tenant.slug)
             for model in training_selectors.tuned_model_list(tenant_id=tenant.id)]
    bases = [model_object(name=model.name, created=model.created_at,
                          owned_by=tenant.slug if model.tenant_id else PLATFORM_OWNER)
             for model in training_selectors.base_model_list(tenant_id=tenant.id)]
    return tuned + bases


def openai_model_get(*, tenant, name: str) -> dict[str, Any]:
    try:
        model = training_selectors.tuned_model_get(tenant_id=tenant.id, name=name)
        return model_object(name=model.name, created=model.created_at, owned_by=tenant.slug)
    except NotFound:
        pass
    try:
        base = training_selectors.base_model_get(name=name, tenant_id=tenant.id)
    except NotFound:
        error = NotFound(f"The model {name!r} does not exist or you do not have access to it.",
                         details={"field": "model"})
        error.code = "model_not_found"
        raise error from None
    return model_object(name=base.name, created=base.created_at, owned_by=tenant.slug if base.tenant_id else PLATFORM_OWNER)


# --- Fine-tuning jobs -----------------------------------------------------------------------------


def openai_finetune_get(*, tenant_id: UUID | str, fine_tuning_job_id: str):
    return training_selectors.finetune_get(tenant_id=tenant_id, job_id=job_uuid_from(fine_tuning_job_id))


def openai_finetune_list(*, tenant_id: UUID | str, after: str | None, limit: int) -> tuple[list, bool]:
    jobs = training_selectors.finetune_list(tenant_id=tenant_id)
    if after:
        anchor = openai_finetune_get(tenant_id=tenant_id, fine_tuning_job_id=after)
        jobs = jobs.filter(created_at__lte=anchor.created_at).exclude(created_at=anchor.created_at, id__gte=anchor.id)
    return _page(list(jobs[:limit + 1]), limit)


def openai_finetune_events(*, tenant_id: UUID | str, fine_tuning_job_id: str, after: str | None,
                           limit: int) -> tuple[list, bool]:
    """The job's events, newest first (OpenAI's order); `after` an event id: the ones older than it."""
    job = openai_finetune_get(tenant_id=tenant_id, fine_tuning_job_id=fine_tuning_job_id)
    events = training_selectors.finetune_events(tenant_id=tenant_id, job_id=job.id).order_by("-id")
    if after:
        seq = event_seq_from(after)
        if seq is None:
            raise ValidationFailed("after: an event id (ftevent-<number>)", details={"field": "after"})
        events = events.filter(id__lt=seq)
    return _page(list(events[:limit + 1]), limit)


def openai_finetune_checkpoints(*, tenant_id: UUID | str, fine_tuning_job_id: str, after: str | None,
                                limit: int) -> tuple[Any, list, bool, list[dict], list[dict]]:
    """(job, checkpoints newest first, has_more, the job's train metrics, its eval metrics): each
    checkpoint's metrics are the last of each at or before its step."""
    job = openai_finetune_get(tenant_id=tenant_id, fine_tuning_job_id=fine_tuning_job_id)
    checkpoints = list(training_selectors.finetune_checkpoints(tenant_id=tenant_id, job_id=job.id).order_by("-step"))
    if after:
        ids = [checkpoint_id_for(checkpoint.id) for checkpoint in checkpoints]
        if after not in ids:
            raise ValidationFailed("after: a checkpoint id of this job", details={"field": "after"})
        checkpoints = checkpoints[ids.index(after) + 1:]
    page, has_more = _page(checkpoints, limit)
    metrics = [event.data for event in training_selectors.finetune_events(tenant_id=tenant_id, job_id=job.id)
               .filter(kind="metric").only("data")]
    train = [data for data in metrics if data.get("kind") == "train"]
    evaluation = [data for data in metrics if data.get("kind") == "eval"]
    return job, page, has_more, train, evaluation


def last_at_or_before(entries: list[dict], step: int) -> dict | None:
    found = None
    for entry in entries:
        if isinstance(entry.get("step"), int) and entry["step"] <= step:
            found = entry
    return found
