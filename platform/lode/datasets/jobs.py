"""Job handlers that build versions on the cpu queue: `datasets.ingest` (an upload into the
dataset's next version) and `datasets.operation` (a version made from its parent by an operation).

Both are idempotent: a re-delivery finds the version ready and does nothing; a retry after a crash
removes what the dead attempt wrote and builds again from the start (builds are minutes, not hours,
so they checkpoint nothing). A build that cannot finish marks its version failed and removes its
objects: no partial version is ever readable."""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from lode.core import artifacts
from lode.core.jobs.runner import JobContext, JobStopped
from tenants.db_context import tenant_atomic

from . import ingest as ingest_module
from . import services
from .models import DatasetVersion
from .schemas import Modality, modality_get
from .shards import ShardWriter, image_key, shard_tables, version_delete_objects

LENGTH_BINS = (0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)
SAMPLE_ROWS = 5_000
ROWS_PER_SHARD = 100_000


def _load(tenant_id: UUID, version_id: str) -> DatasetVersion:
    with tenant_atomic(tenant_id):
        return DatasetVersion.objects.select_related("upload", "parent").get(id=version_id)


# --- statistics ------------------------------------------------------------------------------------


class VersionStats:
    """Statistics over a version's tables as they are written: counts, length histograms and labels
    over every row (Arrow compute, no per-row Python), and a sample of the first rows for the
    figures that need to look at text (language mix, PII hits, duplicates)."""

    def __init__(self, modality: Modality):
        self.modality = modality
        self.rows = 0
        self.lengths = {name: [0] * len(LENGTH_BINS) for name in modality.text_fields if name != "messages"}
        self.labels: dict[str, int] = {}
        self.splits: dict[str, int] = {}
        self.sample: list[dict] = []

    def update(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        for name, histogram in self.lengths.items():
            lengths = pc.fill_null(pc.utf8_length(table.column(name)), 0).to_numpy(zero_copy_only=False)
            counts = np.bincount(np.searchsorted(LENGTH_BINS, lengths, side="right") - 1, minlength=len(LENGTH_BINS))
            for index, count in enumerate(counts[: len(LENGTH_BINS)]):
                histogram[index] += int(count)
        if self.modality.label_field and self.modality.label_field in table.column_names:
            flat = pc.list_flatten(table.column(self.modality.label_field))
            for item in pc.value_counts(flat).to_pylist():
                self.labels[item["values"]] = self.labels.get(item["values"], 0) + item["counts"]
        if "split" in table.column_names:
            for item in pc.value_counts(table.column("split")).to_pylist():
                self.splits[item["values"]] = self.splits.get(item["values"], 0) + item["counts"]
        if len(self.sample) < SAMPLE_ROWS:
            self.sample.extend(table.slice(0, SAMPLE_ROWS - len(self.sample)).to_pylist())

    def result(self) -> dict[str, Any]:
        from .operations.stats import TextStats

        sampled = TextStats(self.modality)
        sampled.update(self.sample)
        sample = sampled.result()
        return {
            "rows": self.rows,
            "length_bins": list(LENGTH_BINS),
            "length_histograms": self.lengths,
            "labels": dict(sorted(self.labels.items(), key=lambda item: -item[1])[:200]),
            "splits": self.splits,
            "sample_size": len(self.sample),
            "sample": sample,
        }


class CountingWriter(ShardWriter):
    """A ShardWriter that also feeds the statistics and the content hash."""

    def __init__(self, *, tenant_id: UUID, prefix: str, images_prefix: str, modality: Modality):
        super().__init__(tenant_id=tenant_id, prefix=prefix, images_prefix=images_prefix)
        self.stats = VersionStats(modality)
        self.digest = hashlib.sha256()
        self.hash_rows = True

    def write(self, table: pa.Table) -> None:
        super().write(table)
        self.stats.update(table)
        if self.hash_rows:
            for row in table.to_pylist():
                self.digest.update(orjson.dumps(row, option=orjson.OPT_SORT_KEYS))
                self.digest.update(b"\n")


def _schema_of(modality: Modality, extra: list[str] | None = None) -> dict:
    return {"modality": modality.name, "fields": [{"name": f.name, "kind": f.kind, "required": f.required} for f in modality.fields],
            "extra_columns": extra or []}


# --- ingest --------------------------------------------------------------------------------------------


@contextmanager
def _building(ctx: JobContext, version: DatasetVersion):
    """Whatever stops a build (an error, a cancel, a time limit) marks the version failed and
    removes its objects before the job records the outcome."""
    try:
        yield
    except BaseException as exc:
        error = exc.message if isinstance(exc, JobStopped) else f"{type(exc).__name__}: {exc}"
        services.version_build_fail(tenant_id=ctx.tenant_id, version_id=version.id, error=error,
                                    report=getattr(exc, "report", None))
        raise


def ingest_run(ctx: JobContext, params: dict) -> dict:
    version = _load(ctx.tenant_id, params["version_id"])
    if version.status == DatasetVersion.Status.READY:
        return {"version_id": str(version.id), "rows": version.row_count}
    _refuse_failed(version)
    with _building(ctx, version):
        return _ingest(ctx, version)


def _refuse_failed(version: DatasetVersion) -> None:
    """A job delivered again after its build failed (the worker died after marking it) must not
    build it again: the failure stands, and a new upload or operation makes a new version."""
    if version.status == DatasetVersion.Status.FAILED:
        raise JobStopped(code="version_failed", message="This version's build failed earlier; see its report.")


def _ingest(ctx: JobContext, version: DatasetVersion) -> dict:
    upload = version.upload
    modality = modality_get(version.modality)
    # A dead attempt's leftovers go first.
    version_delete_objects(tenant_id=ctx.tenant_id, prefix=version.prefix, images_prefix=version.images_prefix)
    writer = ShardWriter(tenant_id=ctx.tenant_id, prefix=version.prefix, images_prefix=version.images_prefix)
    stats = VersionStats(modality)

    def write_shard(table: pa.Table) -> None:
        writer.write(table)
        stats.update(table)

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, upload.filename)
        ctx.progress(0.0, "fetching the upload", force=True)
        artifacts.file_get(tenant_id=ctx.tenant_id, key=upload.key, path=path)
        try:
            report = _ingest_file(ctx, writer, path, upload, modality, write_shard)
        except ingest_module.IngestError as exc:
            error = services.ingest_error_for_api(exc)
            stop = JobStopped(code=exc.code, message=error.message)
            stop.report = {"details": error.details}
            raise stop from None
    if report.accepted == 0:
        stop = JobStopped(code="no_rows", message=f"No row was accepted ({report.rejected} rejected); see the version's report.")
        stop.report = _report_dict(report)
        raise stop
    ctx.progress(0.97, "statistics")
    built = services.version_build_finish(
        tenant_id=ctx.tenant_id, version_id=version.id, row_count=report.accepted, shard_count=writer.shards,
        size_bytes=writer.bytes, content_hash=report.content_hash, schema=_schema_of(modality),
        report=_report_dict(report), stats=stats.result(),
    )
    return {"version_id": str(built.id), "rows": built.row_count, "rejected": report.rejected}


def _ingest_file(ctx: JobContext, writer: ShardWriter, path: str, upload, modality: Modality, write_shard):
    try:
        return ingest_module.ingest(
            path, filename=upload.filename, modality=modality, column_mapping=upload.column_mapping or None,
            declared_format=upload.declared_format or None, limits=services.limits(), write_shard=write_shard,
            write_image=writer.write_image if modality.name == "image_caption" else None,
            progress=lambda fraction: (ctx.check_cancelled(), ctx.progress(0.95 * fraction, "reading rows")),
            rows_per_shard=ROWS_PER_SHARD,
        )
    finally:
        # The shard in flight lands (or fails) before anything reads the figures or cleans up.
        writer.close()


def worker_warm_up() -> None:
    """What a datasets job would otherwise load on first use, done once as a worker process
    starts: the language identifier the statistics use (about 2 s)."""
    from .operations.filters import language_of

    language_of("warm up")


def _report_dict(report) -> dict:
    return {
        "format": report.format, "encoding": report.encoding, "columns": report.columns, "mapping": report.mapping,
        "rows_read": report.rows_read, "accepted": report.accepted, "rejected": report.rejected,
        "rejected_samples": report.rejected_samples, "images": report.images, "bytes_read": report.bytes_read,
    }


# --- operations ----------------------------------------------------------------------------------------


def _joined_text(modality: Modality, row: dict, fields: list[str]) -> str:
    from .schemas import row_texts

    return "\n".join(row_texts(modality, row, tuple(fields)))


def operation_run(ctx: JobContext, params: dict) -> dict:
    version = _load(ctx.tenant_id, params["version_id"])
    if version.status == DatasetVersion.Status.READY:
        return {"version_id": str(version.id), "rows": version.row_count}
    _refuse_failed(version)
    parent = version.parent
    modality = modality_get(version.modality)
    options = dict(version.params)
    version_delete_objects(tenant_id=ctx.tenant_id, prefix=version.prefix, images_prefix=version.images_prefix)
    writer = CountingWriter(tenant_id=ctx.tenant_id, prefix=version.prefix, images_prefix=version.images_prefix,
                            modality=modality)
    with _building(ctx, version):
        try:
            report, extra_columns = OPERATIONS[version.operation](ctx, parent, modality, options, writer)
        finally:
            writer.close()  # the shard in flight lands before the figures are read or cleaned up
        built = services.version_build_finish(
            tenant_id=ctx.tenant_id, version_id=version.id, row_count=writer.rows, shard_count=writer.shards,
            size_bytes=writer.bytes, content_hash=writer.digest.hexdigest(), schema=_schema_of(modality, extra_columns),
            report={"input_rows": parent.row_count, "output_rows": writer.rows, **report}, stats=writer.stats.result(),
        )
    return {"version_id": str(built.id), "rows": built.row_count}


def _parent_tables(ctx: JobContext, parent: DatasetVersion, *, share: float = 1.0, offset: float = 0.0, label: str = ""):
    for index, table in enumerate(shard_tables(tenant_id=ctx.tenant_id, prefix=parent.prefix, shard_count=parent.shard_count)):
        ctx.check_cancelled()
        yield table
        ctx.progress(offset + share * (index + 1) / max(parent.shard_count, 1), label or f"shard {index + 1}/{parent.shard_count}")


def _write_rows(writer: ShardWriter, rows: list[dict], schema: pa.Schema) -> None:
    if rows:
        writer.write(pa.Table.from_pylist(rows, schema=schema))


def _per_row(transform):
    """An operation that maps each row to zero or more rows, shard by shard."""

    def run(ctx, parent, modality, options, writer):
        schema = None
        counts: dict[str, Any] = {}
        for table in _parent_tables(ctx, parent):
            schema = table.schema
            out = []
            for row in table.to_pylist():
                out.extend(transform(modality, row, options, counts))
            _write_rows(writer, out, schema)
        return counts, [name for name in (schema.names if schema else []) if name not in modality.field_names]

    return run


def _normalise(modality, row, options, counts):
    from .operations.normalise import normalise_row

    changed = normalise_row(modality, row, nfkc=options["nfkc"], whitespace=options["whitespace"],
                            control=options["control"], chinese=options["chinese"], fields=options["fields"])
    if changed != row:
        counts["changed_rows"] = counts.get("changed_rows", 0) + 1
    return [changed]


def _filter(modality, row, options, counts):
    from .operations import filters

    text = _joined_text(modality, row, options["fields"])
    reason = None
    if not filters.length_ok([text], min_chars=options["min_chars"], max_chars=options["max_chars"]):
        reason = "length"
    elif options["languages"] and not filters.language_ok(text, allowed=set(options["languages"]),
                                                          min_confidence=options["min_language_confidence"]):
        reason = "language"
    elif options["pattern"] and not filters.regex_ok(text, pattern=options["pattern"], mode=options["pattern_mode"]):
        reason = "pattern"
    if reason:
        removed = counts.setdefault("removed", {})
        removed[reason] = removed.get(reason, 0) + 1
        return []
    return [row]


def _pii(modality, row, options, counts):
    from .operations.pii import pii_find, pii_redact

    hits = counts.setdefault("hits", {})
    new = dict(row)
    found = False
    for name in options["fields"]:
        value = row.get(name)
        if isinstance(value, str):
            redacted, found_counts = pii_redact(value, types=options["types"])
            new[name] = redacted
        elif isinstance(value, list):  # chat messages
            messages, found_counts = [], {}
            for message in value:
                text, message_counts = pii_redact(message["content"], types=options["types"])
                messages.append({**message, "content": text})
                for kind, count in message_counts.items():
                    found_counts[kind] = found_counts.get(kind, 0) + count
            new[name] = messages
        else:
            continue
        for kind, count in found_counts.items():
            hits[kind] = hits.get(kind, 0) + count
            found = found or count > 0
    if found:
        counts["rows_with_pii"] = counts.get("rows_with_pii", 0) + 1
        if options["mode"] == "drop":
            return []
    return [new if options["mode"] == "redact" else row]


def _dedup_exact(ctx, parent, modality, options, writer):
    import xxhash

    seen: set[bytes] = set()
    removed = 0
    schema = None
    for table in _parent_tables(ctx, parent):
        schema = table.schema
        kept = []
        for row in table.to_pylist():
            digest = xxhash.xxh3_128_digest(_joined_text(modality, row, options["fields"]).encode())
            if digest in seen:
                removed += 1
                continue
            seen.add(digest)
            kept.append(row)
        _write_rows(writer, kept, schema)
    return {"removed": removed}, [n for n in (schema.names if schema else []) if n not in modality.field_names]


def _dedup_near(ctx, parent, modality, options, writer):
    from .operations.dedup import near_duplicate_clusters, near_duplicate_keep_mask

    texts: list[str] = []
    for table in _parent_tables(ctx, parent, share=0.3, label="reading texts"):
        texts.extend(_joined_text(modality, row, options["fields"]) for row in table.to_pylist())
    ctx.progress(0.3, "finding near-duplicates", force=True)
    clusters = near_duplicate_clusters(texts, threshold=options["threshold"], num_perm=options["num_perm"], ngram=options["ngram"])
    keep = near_duplicate_keep_mask(clusters, len(texts))
    examples = [[texts[index][:300] for index in cluster[:3]] for cluster in sorted(clusters, key=len, reverse=True)[:10]]
    del texts
    position = 0
    schema = None
    for table in _parent_tables(ctx, parent, share=0.6, offset=0.35, label="writing kept rows"):
        schema = table.schema
        mask = pa.array(keep[position: position + table.num_rows])
        position += table.num_rows
        writer.write(table.filter(mask))
    removed = sum(1 for kept in keep if not kept)
    return ({"removed": removed, "clusters": len(clusters), "largest_cluster": max((len(c) for c in clusters), default=0),
             "cluster_examples": examples},
            [n for n in (schema.names if schema else []) if n not in modality.field_names])


def _split(ctx, parent, modality, options, writer):
    from .operations.split import split_assign

    labels = None
    if options["stratify"]:
        labels = []
        for table in _parent_tables(ctx, parent, share=0.3, label="reading labels"):
            labels.extend("|".join(sorted(value)) for value in table.column(modality.label_field).to_pylist())
    assignment = split_assign(parent.row_count, ratios=tuple(options["ratios"]), seed=options["seed"], labels=labels)
    position = 0
    for table in _parent_tables(ctx, parent, share=0.6, offset=0.35, label="writing splits"):
        if "split" in table.column_names:
            table = table.drop_columns(["split"])
        column = pa.array(assignment[position: position + table.num_rows], type=pa.string())
        position += table.num_rows
        writer.write(table.append_column("split", column))
    counts: dict[str, int] = {}
    for name in assignment:
        counts[name] = counts.get(name, 0) + 1
    return {"splits": counts}, ["split"]


def _augment(ctx, parent, modality, options, writer):
    from .operations.augment import augment_image, augment_text

    added = 0
    schema = None
    for table in _parent_tables(ctx, parent):
        rows = table.to_pylist()
        out = []
        for index, row in enumerate(rows):
            out.append({**row, "augmented": False})
            for copy in range(options["copies"]):
                seed = options["seed"] * 1_000_003 + added + copy
                new = dict(row)
                if modality.name == "image_caption":
                    data = artifacts.object_get(tenant_id=ctx.tenant_id, key=image_key(parent.dataset_id, row["image"]))
                    name = f"aug-{added:08d}-{os.path.basename(row['image']).rsplit('.', 1)[0]}.png"
                    new["image"] = writer.write_image(name, augment_image(data, ops=options["ops"], seed=seed))
                else:
                    for field in options["fields"]:
                        value = new.get(field)
                        if isinstance(value, str):
                            new[field] = augment_text(value, ops=options["ops"], seed=seed, rate=options["rate"])
                        elif isinstance(value, list):
                            new[field] = [{**m, "content": augment_text(m["content"], ops=options["ops"], seed=seed, rate=options["rate"])}
                                          for m in value]
                new["augmented"] = True
                out.append(new)
                added += 1
        schema = table.schema.append(pa.field("augmented", pa.bool_())) if "augmented" not in table.column_names else table.schema
        _write_rows(writer, out, schema)
    return {"added": added}, [n for n in (schema.names if schema else []) if n not in modality.field_names]


OPERATIONS = {
    "normalise": _per_row(_normalise),
    "filter": _per_row(_filter),
    "pii_redact": _per_row(_pii),
    "dedup_exact": _dedup_exact,
    "dedup_near": _dedup_near,
    "split": _split,
    "augment": _augment,
}


def operation_run_register(name: str, run) -> None:
    """Another capability's operation: `run(ctx, parent, modality, options, writer)` returns
    (report, extra columns), as the ones above."""
    OPERATIONS[name] = run
