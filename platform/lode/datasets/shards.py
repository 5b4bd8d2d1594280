"""A version's rows in the artifact store: Parquet shards `shard-00000.parquet`, … under the
version's prefix, written once, read shard by shard. Versions never change, so a shard fetched to
the local cache stays valid for as long as the file is there."""
from __future__ import annotations

import io
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings

from lode.core import artifacts


def shard_key(prefix: str, index: int) -> str:
    return f"{prefix}shard-{index:05d}.parquet"


class ShardWriter:
    """Writes tables as consecutive shards of one version; counts rows and bytes.

    Encoding a shard and storing it run on a background thread while the caller builds the next
    one (at most one shard in flight: memory stays at two shards). `flush()` waits for it and
    raises what it raised; callers flush before reading the figures and before cleaning up."""

    def __init__(self, *, tenant_id: UUID | str, prefix: str, images_prefix: str = ""):
        self.tenant_id = tenant_id
        self.prefix = prefix
        self.images_prefix = images_prefix
        self.shards = 0
        self.rows = 0
        self.bytes = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.flush()
        index = self.shards
        self.shards += 1
        self.rows += table.num_rows
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._pending = self._pool.submit(self._store, table, index)

    def _store(self, table: pa.Table, index: int) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        data = buffer.getvalue()
        artifacts.object_put(tenant_id=self.tenant_id, key=shard_key(self.prefix, index), data=data,
                             content_type="application/vnd.apache.parquet")
        self.bytes += len(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Waits for the shard in flight (its error, if any, is the caller's to raise first)."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def write_image(self, name: str, data: bytes) -> str:
        """Images live beside the dataset's versions (`datasets/<id>/images/<version>/<name>`), so
        later versions refer to them without copying; a row holds the part after images/."""
        if not self.images_prefix:
            raise ValueError("this writer stores no images")
        relative = f"{self.images_prefix.rstrip('/').rsplit('/', 1)[-1]}/{name}"
        artifacts.object_put(tenant_id=self.tenant_id, key=f"{self.images_prefix}{name}", data=data)
        self.bytes += len(data)
        return relative


def _cache_path(tenant_id: UUID | str, prefix: str, index: int) -> Path:
    return Path(settings.STATE_DIR) / "dataset-cache" / str(tenant_id) / prefix / f"shard-{index:05d}.parquet"


def shard_path(*, tenant_id: UUID | str, prefix: str, index: int) -> Path:
    """The shard as a local file (fetched once into the cache)."""
    path = _cache_path(tenant_id, prefix, index)
    if not path.exists():
        artifacts.file_get(tenant_id=tenant_id, key=shard_key(prefix, index), path=path)  # atomic
    return path


def shard_tables(*, tenant_id: UUID | str, prefix: str, shard_count: int, start: int = 0) -> Iterator[pa.Table]:
    for index in range(start, shard_count):
        yield pq.read_table(shard_path(tenant_id=tenant_id, prefix=prefix, index=index))


def shard_row_counts(*, tenant_id: UUID | str, prefix: str, shard_count: int) -> list[int]:
    return [pq.ParquetFile(shard_path(tenant_id=tenant_id, prefix=prefix, index=index)).metadata.num_rows
            for index in range(shard_count)]


def image_key(dataset_id: UUID | str, value: str) -> str:
    """The artifact key of an image a row names."""
    return f"datasets/{dataset_id}/images/{value}"


def version_delete_objects(*, tenant_id: UUID | str, prefix: str, images_prefix: str = "") -> int:
    """Removes what a failed build wrote, so no partial version remains in the store."""
    removed = artifacts.prefix_delete(tenant_id=tenant_id, prefix=prefix)
    if images_prefix:
        removed += artifacts.prefix_delete(tenant_id=tenant_id, prefix=images_prefix)
    return removed
