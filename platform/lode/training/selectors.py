"""Reads of the model registry and of fine-tune jobs, always within one tenant for tenant data."""
from __future__ import annotations

from uuid import UUID

from django.core.exceptions import ValidationError
from django.db.models import F, Q, QuerySet

from lode.core import artifacts
from lode.core.errors import NotFound
from lode.core.models import Job, JobEvent
from tenants.db_context import tenant_atomic

from .models import BaseModel, TrainingCheckpoint, TunedModel


def base_model_get(*, name: str, tenant_id: UUID | str | None = None) -> BaseModel:
    """A catalog model by name, or (with tenant_id) one of that tenant's uploads."""
    if tenant_id is None:
        found = BaseModel.objects.filter(name=name, tenant__isnull=True).first()
    else:
        with tenant_atomic(tenant_id):
            found = (BaseModel.objects.filter(name=name).filter(Q(tenant__isnull=True) | Q(tenant_id=tenant_id))
                     .order_by(F("tenant_id").asc(nulls_last=True)).first())
    if found is None:
        raise NotFound(f"No base model named {name!r}", details={"name": name})
    return found


def base_model_list(*, task_type: str | None = None, tenant_id: UUID | str | None = None) -> list[BaseModel]:
    """The catalog, and with tenant_id that tenant's uploads too."""
    if tenant_id is None:
        queryset = BaseModel.objects.filter(tenant__isnull=True)
    else:
        queryset = BaseModel.objects.filter(Q(tenant__isnull=True) | Q(tenant_id=tenant_id))
    if task_type:
        queryset = queryset.filter(task_type=task_type)
    if tenant_id is None:
        return list(queryset.order_by("name"))
    with tenant_atomic(tenant_id):
        return list(queryset.order_by("name"))


def base_model_missing_files(*, base_model: BaseModel) -> list[str]:
    """The manifest's files that the artifact store lacks (or holds with another size): non-empty
    when an endpoint lost its objects (the local S3 endpoint may keep them in memory only)."""
    stored = {
        obj.key: obj.size for obj in artifacts.object_list(tenant_id=base_model.tenant_id, prefix=base_model.artifact_prefix)
    }
    missing = []
    for entry in (base_model.manifest or {}).get("files", []):
        key = f"{base_model.artifact_prefix}/{entry['path']}"
        if stored.get(key) != entry["size"]:
            missing.append(entry["path"])
    return missing


# --- Fine-tunes and tuned models ------------------------------------------------------------------


def finetune_list(*, tenant_id: UUID | str, state: str | None = None) -> QuerySet[Job]:
    jobs = Job.objects.filter(tenant_id=tenant_id, kind="training.finetune")
    if state:
        jobs = jobs.filter(state=state)
    return jobs.order_by("-created_at", "-id")


def finetune_get(*, tenant_id: UUID | str, job_id: UUID | str) -> Job:
    with tenant_atomic(tenant_id):
        try:
            return Job.objects.get(tenant_id=tenant_id, id=job_id, kind="training.finetune")
        except (Job.DoesNotExist, ValueError, ValidationError):
            raise NotFound("No such fine-tune job.") from None


def finetune_events(*, tenant_id: UUID | str, job_id: UUID | str, after_id: int | None = None) -> QuerySet[JobEvent]:
    finetune_get(tenant_id=tenant_id, job_id=job_id)
    events = JobEvent.objects.filter(tenant_id=tenant_id, job_id=job_id)
    if after_id is not None:
        events = events.filter(id__gt=after_id)
    return events.order_by("id")


def finetune_checkpoints(*, tenant_id: UUID | str, job_id: UUID | str) -> QuerySet[TrainingCheckpoint]:
    finetune_get(tenant_id=tenant_id, job_id=job_id)
    return TrainingCheckpoint.objects.filter(tenant_id=tenant_id, job_id=job_id).order_by("step")


def finetune_model(*, tenant_id: UUID | str, job_id: UUID | str) -> TunedModel | None:
    with tenant_atomic(tenant_id):
        return TunedModel.objects.filter(tenant_id=tenant_id, job_id=job_id).first()


def tuned_model_list(*, tenant_id: UUID | str) -> QuerySet[TunedModel]:
    return TunedModel.objects.filter(tenant_id=tenant_id).select_related("base_model").order_by("-created_at", "-id")


def tuned_model_get(*, tenant_id: UUID | str, model_id: UUID | str | None = None, name: str | None = None) -> TunedModel:
    with tenant_atomic(tenant_id):
        try:
            if model_id is not None:
                return TunedModel.objects.select_related("base_model").get(tenant_id=tenant_id, id=model_id)
            return TunedModel.objects.select_related("base_model").get(tenant_id=tenant_id, name=name)
        except (TunedModel.DoesNotExist, ValueError, ValidationError):
            raise NotFound("No such model.") from None
