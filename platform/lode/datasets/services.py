"""Writes of datasets: creating one, uploads (through the API, or presigned multipart straight to
S3 and then completed), and launching the jobs that build versions (ingest, operations).

A version row is written `building` with its job and becomes `ready` when the job finishes, in
one transaction with its figures; a build that fails leaves the row `failed` and removes whatever
it had written to the store, so no partial version can be read."""
from __future__ import annotations

import os
import re
import tempfile
from typing import Any
from uuid import UUID, uuid4

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.db.models import Max
from django.utils import timezone

from lode.core import artifacts
from lode.core.errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from lode.core.jobs import services as job_services
from tenants.db_context import tenant_atomic
from tenants.services import actor_api_key, actor_user, audit_record

from . import ingest as ingest_module
from .models import Dataset, DatasetVersion, Upload
from .operations_spec import operation_params_validate
from .schemas import MODALITIES, modality_get

FORMATS = ("csv", "tsv", "jsonl", "json", "parquet", "zip")
MAX_PARTS = 10_000
MIN_PART_BYTES = 5 * 1024 * 1024  # S3's minimum for every part but the last
SNIFF_BYTES = 1024 * 1024


def limits() -> ingest_module.IngestLimits:
    return ingest_module.IngestLimits(max_file_bytes=settings.DATASET_UPLOAD_MAX_BYTES,
                                      max_row_bytes=settings.DATASET_MAX_ROW_BYTES)


def dataset_create(*, tenant_id: UUID | str, name: str, modality: str, description: str = "", by: Any = None) -> Dataset:
    if modality not in MODALITIES:
        raise ValidationFailed(f"modality: one of {', '.join(MODALITIES)}", details={"field": "modality"})
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationFailed("name: 1 to 200 characters", details={"field": "name"})
    with tenant_atomic(tenant_id):
        if Dataset.objects.filter(name=name).exists():
            raise Conflict(f"name: a dataset named {name!r} exists already", details={"field": "name"})
        dataset = Dataset(tenant_id=tenant_id, name=name, modality=modality, description=description[:5000],
                          created_by=actor_user(by))
        dataset.full_clean(exclude=["tenant", "created_by"], validate_constraints=False, validate_unique=False)
        try:
            with transaction.atomic():
                dataset.save()
        except IntegrityError:
            raise Conflict(f"name: a dataset named {name!r} exists already", details={"field": "name"}) from None
        audit_record(tenant_id=tenant_id, action="datasets.dataset_created", user=actor_user(by), api_key=actor_api_key(by),
                     target=dataset, data={"name": name, "modality": modality})
    return dataset


def _dataset(tenant_id: UUID | str, dataset_id: UUID | str) -> Dataset:
    try:
        return Dataset.objects.get(id=dataset_id)
    except (Dataset.DoesNotExist, ValueError):
        raise NotFound("No such dataset.") from None


def _format_checked(declared_format: str | None) -> str:
    if declared_format and declared_format not in FORMATS:
        raise ValidationFailed(f"format: one of {', '.join(FORMATS)}", details={"field": "format"})
    return declared_format or ""


def _mapping_checked(column_mapping: Any, modality: str) -> dict[str, str]:
    if column_mapping in (None, ""):
        return {}
    fields = modality_get(modality).field_names
    if not isinstance(column_mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in column_mapping.items()):
        raise ValidationFailed("column_mapping: an object of schema field -> file column", details={"field": "column_mapping"})
    unknown = sorted(set(column_mapping) - set(fields))
    if unknown:
        raise ValidationFailed(f"column_mapping: {unknown[0]!r} is not a field of {modality} (fields: {', '.join(fields)})",
                               details={"field": "column_mapping"})
    return dict(column_mapping)


def _safe_filename(filename: str) -> str:
    base = os.path.basename((filename or "upload").replace("\\", "/"))
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "upload"
    return cleaned[:120]


def _sniff(path: str, *, filename: str, modality: str, mapping: dict, declared_format: str) -> ingest_module.Sniff:
    try:
        return ingest_module.sniff(path, filename=filename, modality=modality_get(modality), column_mapping=mapping or None,
                                   declared_format=declared_format or None, limits=limits())
    except ingest_module.IngestError as exc:
        raise ingest_error_for_api(exc) from None


def ingest_error_for_api(exc: "ingest_module.IngestError") -> ValidationFailed:
    """The parser's error as the API's 4xx (413 for a file over the limit), with line/byte/field."""
    details = {"code": exc.code}
    for name in ("line", "byte", "field"):
        value = getattr(exc, name, None)
        if value is not None:
            details[name] = value
    if exc.code == "too_large":
        return PayloadTooLarge(str(exc), details=details)
    return ValidationFailed(str(exc), details=details)


def upload_direct(
    *, tenant_id: UUID | str, dataset_id: UUID | str, file, declared_format: str | None = None,
    column_mapping: dict | None = None, by: Any = None,
) -> tuple[Upload, DatasetVersion]:
    """A file sent through the API: checked (format, encoding, columns, first records) before
    anything is stored, so a file that cannot be read is a 4xx naming where it broke; then stored
    and ingested by a job into the dataset's next version."""
    with tenant_atomic(tenant_id):
        dataset = _dataset(tenant_id, dataset_id)
    declared_format = _format_checked(declared_format)
    mapping = _mapping_checked(column_mapping, dataset.modality)
    if file.size > settings.DATASET_UPLOAD_MAX_BYTES:
        raise PayloadTooLarge(f"file: larger than the {settings.DATASET_UPLOAD_MAX_BYTES} byte limit",
                              details={"field": "file", "limit_bytes": settings.DATASET_UPLOAD_MAX_BYTES})
    filename = _safe_filename(file.name)
    with tempfile.TemporaryDirectory() as folder:
        path = getattr(file, "temporary_file_path", lambda: None)()
        if path is None:
            path = os.path.join(folder, filename)
            with open(path, "wb") as handle:
                for chunk in file.chunks():
                    handle.write(chunk)
        sniffed = _sniff(path, filename=filename, modality=dataset.modality, mapping=mapping, declared_format=declared_format)
        upload_id = uuid4()
        key = f"datasets/{dataset.id}/uploads/{upload_id}/{filename}"
        stored = artifacts.file_put(tenant_id=tenant_id, key=key, path=path)
    try:
        with tenant_atomic(tenant_id):
            upload = Upload(id=upload_id, tenant_id=tenant_id, dataset=dataset, filename=filename, key=key, size=stored.size,
                            declared_format=sniffed.format, column_mapping=sniffed.mapping, status=Upload.Status.STORED,
                            created_by=actor_user(by))
            upload.save()
            version = _ingest_launch(upload, by=by)
    except Exception:
        artifacts.object_delete(tenant_id=tenant_id, key=key)
        raise
    return upload, version


def upload_multipart_start(
    *, tenant_id: UUID | str, dataset_id: UUID | str, filename: str, size: int, part_count: int,
    declared_format: str | None = None, column_mapping: dict | None = None, by: Any = None,
) -> tuple[Upload, list[str]]:
    """Large files: the client PUTs each part to its presigned URL, then calls complete."""
    with tenant_atomic(tenant_id):
        dataset = _dataset(tenant_id, dataset_id)
    declared_format = _format_checked(declared_format)
    mapping = _mapping_checked(column_mapping, dataset.modality)
    if not isinstance(size, int) or size <= 0:
        raise ValidationFailed("size: the file's size in bytes", details={"field": "size"})
    if size > settings.DATASET_UPLOAD_MAX_BYTES:
        raise PayloadTooLarge(f"size: larger than the {settings.DATASET_UPLOAD_MAX_BYTES} byte limit",
                              details={"field": "size", "limit_bytes": settings.DATASET_UPLOAD_MAX_BYTES})
    if not isinstance(part_count, int) or not 1 <= part_count <= MAX_PARTS or (part_count > 1 and size / part_count < MIN_PART_BYTES):
        raise ValidationFailed(f"part_count: 1 to {MAX_PARTS}, each part but the last at least {MIN_PART_BYTES} bytes",
                               details={"field": "part_count"})
    safe = _safe_filename(filename)
    upload_id = uuid4()
    key = f"datasets/{dataset.id}/uploads/{upload_id}/{safe}"
    multipart_id = artifacts.multipart_start(tenant_id=tenant_id, key=key)
    with tenant_atomic(tenant_id):
        upload = Upload(id=upload_id, tenant_id=tenant_id, dataset=dataset, filename=safe, key=key, size=size,
                        declared_format=declared_format, column_mapping=mapping, multipart_upload_id=multipart_id,
                        created_by=actor_user(by))
        upload.save()
    urls = [artifacts.multipart_part_url(tenant_id=tenant_id, key=key, upload_id=multipart_id, part_number=number)
            for number in range(1, part_count + 1)]
    return upload, urls


def upload_multipart_complete(
    *, tenant_id: UUID | str, upload_id: UUID | str, parts: list[dict], by: Any = None
) -> tuple[Upload, DatasetVersion]:
    with tenant_atomic(tenant_id):
        try:
            upload = Upload.objects.select_for_update().select_related("dataset").get(id=upload_id)
        except (Upload.DoesNotExist, ValueError):
            raise NotFound("No such upload.") from None
        if upload.status != Upload.Status.PENDING:
            raise Conflict(f"The upload is {upload.status}, not waiting for its parts.", details={"status": upload.status})
    try:
        pairs = sorted((int(part["part_number"]), str(part["etag"])) for part in parts)
    except (KeyError, TypeError, ValueError):
        raise ValidationFailed("parts: a list of {part_number, etag}", details={"field": "parts"}) from None
    if not pairs or [number for number, _ in pairs] != list(range(1, len(pairs) + 1)):
        raise ValidationFailed("parts: numbered 1..n without gaps", details={"field": "parts"})
    try:
        stored = artifacts.multipart_complete(tenant_id=tenant_id, key=upload.key, upload_id=upload.multipart_upload_id, parts=pairs)
    except Exception as exc:  # S3 names a missing or wrong part; the client can retry with the right list
        raise ValidationFailed(f"parts: the store refused them ({type(exc).__name__})", details={"field": "parts"}) from None
    if stored.size > settings.DATASET_UPLOAD_MAX_BYTES:
        artifacts.object_delete(tenant_id=tenant_id, key=upload.key)
        raise PayloadTooLarge(f"file: larger than the {settings.DATASET_UPLOAD_MAX_BYTES} byte limit",
                              details={"field": "file", "limit_bytes": settings.DATASET_UPLOAD_MAX_BYTES})
    fmt = upload.declared_format or _format_from_name(upload.filename)
    if fmt not in ("parquet", "zip"):  # their index sits at the end: checked by the ingest job
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, upload.filename)
            with open(path, "wb") as handle:
                handle.write(artifacts.object_get_head(tenant_id=tenant_id, key=upload.key, length=SNIFF_BYTES))
            try:
                _sniff(path, filename=upload.filename, modality=upload.dataset.modality, mapping=upload.column_mapping,
                       declared_format=upload.declared_format)
            except ValidationFailed:
                artifacts.object_delete(tenant_id=tenant_id, key=upload.key)
                with tenant_atomic(tenant_id):
                    Upload.objects.filter(id=upload.id).update(status=Upload.Status.FAILED, error="unreadable file")
                raise
    with tenant_atomic(tenant_id):
        Upload.objects.filter(id=upload.id).update(status=Upload.Status.STORED, size=stored.size)
        upload.refresh_from_db()
        version = _ingest_launch(upload, by=by)
    return upload, version


def _format_from_name(filename: str) -> str:
    extension = filename.lower().rsplit(".", 1)[-1] if "." in filename else ""
    return {"ndjson": "jsonl", "pq": "parquet"}.get(extension, extension)


def _next_number(dataset_id: UUID) -> int:
    # The dataset row is locked by the caller, so two builds never take the same number.
    return (DatasetVersion.objects.filter(dataset_id=dataset_id).aggregate(top=Max("number"))["top"] or 0) + 1


def _ingest_launch(upload: Upload, *, by: Any) -> DatasetVersion:
    dataset = Dataset.objects.select_for_update().get(id=upload.dataset_id)
    version = DatasetVersion.objects.create(
        tenant_id=upload.tenant_id, dataset=dataset, number=_next_number(dataset.id), upload=upload,
        operation=DatasetVersion.Operation.UPLOAD, modality=dataset.modality,
        params={"filename": upload.filename, "format": upload.declared_format, "column_mapping": upload.column_mapping},
        created_by=actor_user(by),
    )
    job = job_services.job_create(tenant_id=upload.tenant_id, created_by=actor_user(by), kind="datasets.ingest",
                                  params={"version_id": str(version.id)})
    DatasetVersion.objects.filter(id=version.id).update(job=job)
    Upload.objects.filter(id=upload.id).update(job=job, status=Upload.Status.INGESTING)
    version.job = job
    audit_record(tenant_id=upload.tenant_id, action="datasets.upload_ingesting", user=actor_user(by), api_key=actor_api_key(by),
                 target=version, data={"filename": upload.filename, "size": upload.size})
    return version


def operation_launch(
    *, tenant_id: UUID | str, version_id: UUID | str, operation: str, params: dict | None = None, by: Any = None
) -> DatasetVersion:
    """A new version made from a ready one by an operation, built by a job with progress."""
    with tenant_atomic(tenant_id):
        try:
            parent = DatasetVersion.objects.select_related("dataset").get(id=version_id)
        except (DatasetVersion.DoesNotExist, ValueError):
            raise NotFound("No such version.") from None
        if parent.status != DatasetVersion.Status.READY:
            raise Conflict(f"The version is {parent.status}; operations need a ready version.", details={"status": parent.status})
        clean = operation_params_validate(operation, params or {}, modality=parent.modality)
        version = version_derive(tenant_id=tenant_id, parent=parent, operation=operation, params=clean, by=by,
                                 job_kind="datasets.operation")
        audit_record(tenant_id=tenant_id, action="datasets.operation_launched", user=actor_user(by), api_key=actor_api_key(by),
                     target=version, data={"operation": operation, "parent": str(parent.id), "params": clean})
    return version


def version_derive(
    *, tenant_id: UUID | str, parent: DatasetVersion, operation: str, params: dict, by: Any, job_kind: str,
    job_params: dict | None = None, is_synthetic: bool | None = None,
) -> DatasetVersion:
    """The next version of the parent's dataset, building, and the job that builds it (params
    `{"version_id", **job_params}`), written in the caller's tenant transaction (the job's message
    goes on commit). Synthetic when the parent is, or when the caller says so (generated rows)."""
    dataset = Dataset.objects.select_for_update().get(id=parent.dataset_id)
    version = DatasetVersion.objects.create(
        tenant_id=tenant_id, dataset=dataset, number=_next_number(dataset.id), parent=parent, operation=operation,
        params=params, modality=parent.modality, created_by=actor_user(by),
        is_synthetic=parent.is_synthetic if is_synthetic is None else is_synthetic,
    )
    job = job_services.job_create(tenant_id=tenant_id, created_by=actor_user(by), kind=job_kind,
                                  params={"version_id": str(version.id), **(job_params or {})})
    DatasetVersion.objects.filter(id=version.id).update(job=job)
    version.job = job
    return version


def version_build_finish(
    *, tenant_id: UUID | str, version_id: UUID | str, row_count: int, shard_count: int, size_bytes: int,
    content_hash: str, schema: dict, report: dict, stats: dict,
) -> DatasetVersion:
    with tenant_atomic(tenant_id):
        version = DatasetVersion.objects.select_for_update().get(id=version_id)
        if version.status != DatasetVersion.Status.BUILDING:
            raise Conflict(f"The version is already {version.status}.")
        DatasetVersion.objects.filter(id=version.id).update(
            status=DatasetVersion.Status.READY, row_count=row_count, shard_count=shard_count, size_bytes=size_bytes,
            content_hash=content_hash, schema=schema, report=report, stats=stats, ready_at=timezone.now(),
        )
        if version.upload_id:
            Upload.objects.filter(id=version.upload_id).update(status=Upload.Status.INGESTED)
        version.refresh_from_db()
    return version


def version_build_fail(*, tenant_id: UUID | str, version_id: UUID | str, error: str, report: dict | None = None) -> None:
    """A build that failed: its objects are removed and the row says why."""
    with tenant_atomic(tenant_id):
        version = DatasetVersion.objects.get(id=version_id)
    from .shards import version_delete_objects

    version_delete_objects(tenant_id=tenant_id, prefix=version.prefix, images_prefix=version.images_prefix)
    with tenant_atomic(tenant_id):
        DatasetVersion.objects.filter(id=version_id, status=DatasetVersion.Status.BUILDING).update(
            status=DatasetVersion.Status.FAILED, report={**(report or {}), "error": error[:2000]}
        )
        if version.upload_id:
            Upload.objects.filter(id=version.upload_id).update(status=Upload.Status.FAILED, error=error[:2000])


def version_delete(*, tenant_id: UUID | str, version_id: UUID | str, by: Any = None) -> None:
    """Removes a version for good: its row, the upload it was ingested from, and the dataset when
    no other version is left; its objects go once that is committed. Refused (409) while it is
    building, has derived versions, or something else keeps a protected reference to it (a
    fine-tuned model trained on it)."""
    with tenant_atomic(tenant_id):
        try:
            version = DatasetVersion.objects.select_for_update(of=("self",)).select_related("upload").get(id=version_id)
        except (DatasetVersion.DoesNotExist, ValueError):
            raise NotFound("No such version.") from None
        if version.status == DatasetVersion.Status.BUILDING:
            raise Conflict("The version is still building; delete it once it is ready or failed.",
                           details={"status": version.status})
        if DatasetVersion.objects.filter(parent_id=version.id).exists():
            raise Conflict("Other versions were derived from this one; it is kept.", details={"version": str(version.id)})
        dataset = Dataset.objects.select_for_update().get(id=version.dataset_id)
        upload = version.upload
        keys = [upload.key] if upload is not None else []
        prefixes = (version.prefix, version.images_prefix)
        dataset_removed = not DatasetVersion.objects.filter(dataset_id=dataset.id).exclude(id=version.id).exists()
        # Recorded first: a deleted row no longer has its id.
        audit_record(tenant_id=tenant_id, action="datasets.version_deleted", user=actor_user(by), api_key=actor_api_key(by),
                     target=version, data={"dataset": str(dataset.id), "number": version.number,
                                           "dataset_removed": dataset_removed})
        try:
            with transaction.atomic():
                version.delete()
                if upload is not None and not DatasetVersion.objects.filter(upload_id=upload.id).exists():
                    upload.delete()
                if dataset_removed:
                    dataset.delete()
        except ProtectedError:
            raise Conflict("A fine-tuned model was trained on this version; it is kept.",
                           details={"version": str(version_id)}) from None

    def remove_objects() -> None:
        from .shards import version_delete_objects

        version_delete_objects(tenant_id=tenant_id, prefix=prefixes[0], images_prefix=prefixes[1])
        for key in keys:
            artifacts.object_delete(tenant_id=tenant_id, key=key)

    # After the commit: a rolled-back delete must still find its objects.
    transaction.on_commit(remove_objects)
