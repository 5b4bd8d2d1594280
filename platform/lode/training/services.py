"""Writes of the base-model catalog: the files go to the artifact store (platform scope) first,
then the row is written; a row therefore never points at files that were not uploaded."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from lode.core import artifacts
from lode.core.errors import ValidationFailed
from workers.tiny_models.manifest import MANIFEST_FILENAME, files_revision, folder_files

from .models import BaseModel, BaseModelSource

logger = logging.getLogger(__name__)

BASE_MODELS_PREFIX = "base-models"


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
        BaseModel(name=name, **fields).full_clean(validate_unique=False)
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
        base_model = BaseModel.objects.select_for_update().filter(name=name).first()
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
