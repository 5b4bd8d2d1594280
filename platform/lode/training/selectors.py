"""Reads of the base-model catalog."""
from __future__ import annotations

from django.db.models import QuerySet

from lode.core import artifacts
from lode.core.errors import NotFound

from .models import BaseModel


def base_model_get(*, name: str) -> BaseModel:
    try:
        return BaseModel.objects.get(name=name)
    except BaseModel.DoesNotExist:
        raise NotFound(f"No base model named {name!r}", details={"name": name}) from None


def base_model_list(*, task_type: str | None = None) -> QuerySet[BaseModel]:
    queryset = BaseModel.objects.order_by("name")
    if task_type:
        queryset = queryset.filter(task_type=task_type)
    return queryset


def base_model_missing_files(*, base_model: BaseModel) -> list[str]:
    """The manifest's files that the artifact store lacks (or holds with another size): non-empty
    when an endpoint lost its objects (the local S3 endpoint may keep them in memory only)."""
    stored = {
        obj.key: obj.size for obj in artifacts.object_list(tenant_id=None, prefix=base_model.artifact_prefix)
    }
    missing = []
    for entry in (base_model.manifest or {}).get("files", []):
        key = f"{base_model.artifact_prefix}/{entry['path']}"
        if stored.get(key) != entry["size"]:
            missing.append(entry["path"])
    return missing
