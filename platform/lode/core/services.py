"""Writes of stored artifacts: the bytes go to the artifact store, the record to PostgreSQL, and
a failure in between leaves neither behind."""
from __future__ import annotations

import hashlib
import logging
import re
import uuid
from typing import Any, BinaryIO
from uuid import UUID

from django.conf import settings
from django.db import transaction

from tenants.db_context import tenant_atomic

from . import artifacts
from .errors import NotFound, PayloadTooLarge, ValidationFailed
from .models import Artifact

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class _HashingReader:
    """Wraps an upload so its SHA-256 and size are computed while boto3 streams it, and so an
    upload larger than the limit stops as soon as it passes it."""

    def __init__(self, raw: BinaryIO, limit: int):
        self.raw = raw
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.size += len(chunk)
        if self.size > self.limit:
            raise PayloadTooLarge(
                f"file: larger than the {self.limit} byte limit", details={"field": "file", "limit_bytes": self.limit}
            )
        self.digest.update(chunk)
        return chunk


def artifact_create(
    *, tenant_id: UUID | str, created_by: Any, name: str, stream: BinaryIO, content_type: str = ""
) -> Artifact:
    name = (name or "").strip().replace("\\", "/").split("/")[-1]
    if not name or name in {".", ".."}:
        raise ValidationFailed("file: a file name is required", details={"field": "file"})
    artifact_id = uuid.uuid4()
    key = f"artifacts/{artifact_id}/{_SAFE_NAME.sub('_', name)[:200]}"
    reader = _HashingReader(stream, settings.ARTIFACT_UPLOAD_MAX_BYTES)
    try:
        artifacts.object_put(tenant_id=tenant_id, key=key, data=reader, content_type=content_type or None)
    except PayloadTooLarge:
        # A multipart upload that stopped part-way is aborted by boto3; drop anything that landed.
        artifacts.object_delete(tenant_id=tenant_id, key=key)
        raise
    try:
        with tenant_atomic(tenant_id):
            artifact = Artifact(
                id=artifact_id,
                tenant_id=tenant_id,
                created_by=created_by if getattr(created_by, "pk", None) else None,
                name=name[:255],
                key=key,
                size=reader.size,
                content_type=content_type[:200],
                sha256=reader.digest.hexdigest(),
            )
            artifact.full_clean(exclude=["tenant", "created_by"])
            artifact.save()
    except Exception:
        artifacts.object_delete(tenant_id=tenant_id, key=key)
        raise
    return artifact


def artifact_delete(
    *, tenant_id: UUID | str, artifact_id: UUID | str, by: Any = None, api_key: Any = None, ip: str | None = None
) -> None:
    from tenants.services import audit_record

    with tenant_atomic(tenant_id):
        deleted = Artifact.objects.filter(tenant_id=tenant_id, id=artifact_id).select_for_update().first()
        if deleted is None:
            raise NotFound("Artifact not found.")
        key = deleted.key
        audit_record(tenant_id=tenant_id, action="artifact.deleted", user=by, api_key=api_key, target=deleted, ip=ip,
                     data={"name": deleted.name, "size": deleted.size})
        deleted.delete()
        # Delete the bytes only once the record is gone for good.
        transaction.on_commit(lambda: artifacts.object_delete(tenant_id=tenant_id, key=key))
