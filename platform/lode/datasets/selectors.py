"""Reads of datasets: lists, a version's lineage, pages of its rows, and its rows as a download."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from uuid import UUID

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from django.db.models import QuerySet

from lode.core.errors import NotFound
from tenants.db_context import dangerously_all_tenants, tenant_atomic

from .models import Dataset, DatasetVersion
from .shards import shard_row_counts, shard_tables

MAX_PAGE = 500


def dataset_list(*, tenant_id: UUID | str) -> QuerySet[Dataset]:
    return Dataset.objects.filter(tenant_id=tenant_id)


def version_get(*, tenant_id: UUID | str, version_id: UUID | str) -> DatasetVersion:
    with tenant_atomic(tenant_id):
        try:
            return DatasetVersion.objects.select_related("dataset").get(id=version_id)
        except (DatasetVersion.DoesNotExist, ValueError):
            raise NotFound("No such version.") from None


def version_list(*, tenant_id: UUID | str) -> QuerySet[DatasetVersion]:
    """Every version of the tenant's datasets, newest first, with its dataset and upload."""
    return (DatasetVersion.objects.filter(tenant_id=tenant_id).select_related("dataset", "upload")
            .order_by("-created_at", "-id"))


def version_lineage(*, tenant_id: UUID | str, version_id: UUID | str) -> list[DatasetVersion]:
    """The version, its parent, and so on back to the upload it came from."""
    chain = []
    with tenant_atomic(tenant_id):
        current = DatasetVersion.objects.filter(id=version_id).first()
        if current is None:
            raise NotFound("No such version.")
        while current is not None and len(chain) < 1000:
            chain.append(current)
            current = DatasetVersion.objects.filter(id=current.parent_id).first() if current.parent_id else None
    return chain


def _ready(version: DatasetVersion) -> None:
    if version.status != DatasetVersion.Status.READY:
        from lode.core.errors import Conflict

        raise Conflict(f"The version is {version.status}; only a ready version has rows.", details={"status": version.status})


def _matches(table: pa.Table, text_columns: list[str], query: str) -> pa.Array:
    mask = None
    for name in text_columns:
        column = table.column(name)
        if pa.types.is_string(column.type):
            hit = pc.fill_null(pc.match_substring(column, query, ignore_case=True), False)
        else:  # chat messages: search their contents
            flat = pc.list_flatten(column)
            contents = pc.struct_field(flat, "content")
            parents = pc.list_parent_indices(column)
            hits = pc.fill_null(pc.match_substring(contents, query, ignore_case=True), False)
            rows = set(pc.filter(parents, hits).to_pylist())
            hit = pa.array([index in rows for index in range(table.num_rows)])
        mask = hit if mask is None else pc.or_(mask, hit)
    return mask if mask is not None else pa.array([False] * table.num_rows)


def version_rows(
    *, tenant_id: UUID | str, version_id: UUID | str, offset: int = 0, limit: int = 50, query: str = ""
) -> dict:
    """A page of rows (stable order: the version's own), optionally only those whose text contains
    `query` (case-insensitive)."""
    version = version_get(tenant_id=tenant_id, version_id=version_id)
    _ready(version)
    limit = max(1, min(limit, MAX_PAGE))
    if not query:
        counts = shard_row_counts(tenant_id=tenant_id, prefix=version.prefix, shard_count=version.shard_count)
        rows, skip = [], offset
        for index, count in enumerate(counts):
            if skip >= count:
                skip -= count
                continue
            table = next(shard_tables(tenant_id=tenant_id, prefix=version.prefix, shard_count=index + 1, start=index))
            rows.extend(table.slice(skip, limit - len(rows)).to_pylist())
            skip = 0
            if len(rows) >= limit:
                break
        return {"count": version.row_count, "offset": offset, "rows": rows}
    text_columns = [f["name"] for f in version.schema.get("fields", []) if f["kind"] in ("text", "messages")]
    rows, matched = [], 0
    for table in shard_tables(tenant_id=tenant_id, prefix=version.prefix, shard_count=version.shard_count):
        hits = table.filter(_matches(table, text_columns, query))
        if matched + hits.num_rows > offset and len(rows) < limit:
            start = max(0, offset - matched)
            rows.extend(hits.slice(start, limit - len(rows)).to_pylist())
        matched += hits.num_rows
    return {"count": matched, "offset": offset, "rows": rows}


def version_export(*, tenant_id: UUID | str, version_id: UUID | str, fmt: str) -> Iterator[bytes]:
    """The version's rows as JSONL or CSV, shard by shard (never the whole version in memory)."""
    version = version_get(tenant_id=tenant_id, version_id=version_id)
    _ready(version)
    header_written = False
    for table in shard_tables(tenant_id=tenant_id, prefix=version.prefix, shard_count=version.shard_count):
        if fmt == "jsonl":
            yield b"".join(orjson.dumps(row) + b"\n" for row in table.to_pylist())
            continue
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if not header_written:
            writer.writerow(table.column_names)
            header_written = True
        for row in table.to_pylist():
            writer.writerow([value if isinstance(value, str) or value is None else orjson.dumps(value).decode()
                             for value in row.values()])
        yield buffer.getvalue().encode()


def stored_bytes_by_tenant() -> dict[str, int]:
    """Bytes of every tenant's ready versions (the platform's reading, for storage metering)."""
    from django.db.models import Sum

    return {
        str(tenant_id): int(total or 0)
        for tenant_id, total in dangerously_all_tenants(DatasetVersion).filter(status=DatasetVersion.Status.READY)
        .values_list("tenant_id").annotate(total=Sum("size_bytes"))
    }
