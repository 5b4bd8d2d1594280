"""Dataset ingest benchmark: instruction-pair rows of JSONL, generated here (about 300 bytes a row),
through the real ingest path into a dataset version; against a baseline in the same run that
parses the same file with json.loads and inserts the rows with Django's bulk_create in batches
of 5,000.

    make up                                    # PostgreSQL, Redis, S3 (bash infra/services.sh up)
    .venv/bin/python bench/ingest.py           # 1,000,000 rows, 3 rounds (about 3.5 minutes on 2 CPUs)
    .venv/bin/python bench/ingest.py --quick   # 200,000 rows, up to 3 rounds within 115 s

- The file: N rows {"prompt", "response"[, "system" on every third row]} from a fixed seed: 6-21
  and 18-51 words drawn from a Zipf-distributed vocabulary (common English words, then made-up and
  accented ones), one row in ten Chinese; written to a temporary folder. The expected content hash
  (sha256 over the canonical rows, the absent `system` as null) is computed as it is written,
  independently of lode.datasets.ingest.
- Lode, each round (a fresh dataset in one organization signed up with tenants.services.user_signup):
  1. Upload, in a fresh process (the API side): services.upload_direct() with the file wrapped as an
     uploaded file whose temporary_file_path() is the file (what Django hands a view for a large
     upload once it has spooled the request body to disk; that spooling is not timed). It sniffs
     the first megabyte, stores the file in S3 and creates the version (building) and its
     `datasets.ingest` job in one transaction.
  2. The job, in another fresh process started once the upload has returned, exactly as a worker
     runs it: lode.core.jobs.runner.job_execute(tenant_id, job_id) (claim, heartbeat, handler,
     outcome). Timed from the call to its return (the version is ready by then); Django's start-up
     and the queue's latency are not counted. Peak RSS is that process's ru_maxrss.
  rows/s (end to end) = rows / (upload + job); job-only rows/s = rows / job.
  Checked after each round: the job succeeded, the version is ready with N rows, 0 rejected, the
  shard count the row count implies (and as many objects under its prefix), and the expected
  content hash.
- Baseline, each round, in a fresh process too: a throwaway table `bench_ingest_row_<pid>
  (id bigserial, prompt text, response text, system text)` (created by the owner role, granted to
  the application role, truncated between rounds, dropped at the end), an unmanaged model bound to
  it, and the same file read line by line: json.loads, a model instance per row,
  Model.objects.bulk_create(batch, batch_size=5000) every 5,000 rows through the application's
  connection. Timed from opening the file to the last insert; the table's row count is checked.
- The job's time is broken down by wrapping (timing only) the functions it calls: fetching the
  upload from S3, the ingest's read (parse, row checks, content hash, column building), Parquet
  encoding, the shards' S3 puts, the statistics (per shard, then the sampled text statistics at
  the end) and the final transaction. The handler's modules are imported before the clock (as in
  a worker that has run a job before), and the language model the statistics use is loaded first,
  as a worker process does when it starts (lode.datasets.apps: worker_process_init); any load still
  left inside the job is timed and shown apart.

The upload's Celery message is sent as in production (on commit) but no worker should consume it:
the benchmark runs the job itself, and refuses to start while a worker consumes the `cpu` queue
(it would take the job). The message stays in the queue; a worker started later finds the job
finished and drops it. Each round's dataset (its S3 objects and its rows) is removed once the
round is checked, unless --keep; the organization and the jobs stay in the dev database. The
phases' processes run with LODE_DEBUG=false, as in production (with DEBUG on, Django would keep
the SQL of every bulk_create in memory). --quick starts no round that would end past 115 s
(--time-budget) and says so.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "platform"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lode.settings.dev")
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

from bench.harness import BenchError, child_env, child_result, log, migrate, run_cli  # noqa: E402

TARGET_ROWS_PER_S = 50_000.0
TARGET_RSS_BYTES = 1_000_000_000  # 1 GB
TARGET_RATIO = 3.0
TARGET_TEXT = "≥50000 rows/s end to end, peak RSS <1 GB, ≥3x baseline"
SEED = 20261123
BASELINE_BATCH = 5_000
ROWS_PER_SHARD = 100_000  # lode.datasets.jobs.ROWS_PER_SHARD (checked at run time)
TABLE_PREFIX = "bench_ingest_row_"
RESULT_MARK = "BENCH-INGEST-RESULT "
FILENAME = "bench-instruction-pairs.jsonl"

# The head of the vocabulary: common English words (the most frequent under the Zipf law below);
# the tail is made-up words (letters drawn by English frequency, some accented). About 1 row in 10
# is Chinese (characters drawn by a Zipf law too). Parquet (zstd) then compresses the rows about 2.4:1,
# as it does real text; text built from a few hundred phrases would compress 20:1 and flatter the
# shards' writes.
COMMON_WORDS = (
    "the of and to a in is you that it he was for on are as with his they i at be this have from or one had by word"
    " but not what all were we when your can said there use an each which she do how their if will up other about out"
    " many then them these so some her would make like him into time has look two more write go see number no way"
    " could people my than first water been call who oil its now find long down day did get come made may part data"
    " model customer order refund account password email summary translate explain list question answer policy"
    " contract payment report table value error function python query database server request response memory token"
    " prompt please step because should must example"
).split()
ACCENTED_WORDS = ("évaluer", "résumé", "naïve", "café", "über", "señor", "façade", "coöperate")
SYSTEMS = [f"You are a {kind} assistant. Answer briefly and {how}."
           for kind in ("helpful", "careful", "legal", "support") for how in ("politely", "in French", "with sources")]
LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
LETTER_FREQUENCIES = (12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9,
                      1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07)


# --- the file -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFile:
    path: str
    rows: int
    size: int
    content_hash: str  # as lode.datasets.ingest documents it, computed here


def data_generate(path: str, rows: int, seed: int = SEED) -> DataFile:
    """rows instruction pairs as JSON Lines (about 300 bytes a row), and the content hash the
    ingest must find for them: prompt 6-21 words, response 18-51, `system` on every third row."""
    import numpy as np
    import orjson

    rng = np.random.default_rng(seed)
    frequencies = np.array(LETTER_FREQUENCIES) / sum(LETTER_FREQUENCIES)
    lengths = rng.integers(3, 11, size=6000).tolist()
    letters = rng.choice(list(LETTERS), size=sum(lengths), p=frequencies).tolist()
    made_up, at = [], 0
    for index, length in enumerate(lengths):
        made_up.append(ACCENTED_WORDS[(index // 97) % len(ACCENTED_WORDS)] if index % 97 == 0 else "".join(letters[at:at + length]))
        at += length
    vocabulary = np.array(list(dict.fromkeys(COMMON_WORDS + made_up)), dtype=object)
    word_weights = 1.0 / np.arange(1, len(vocabulary) + 1) ** 1.07
    word_weights /= word_weights.sum()
    characters = np.array([chr(code) for code in rng.integers(0x4E00, 0x4E00 + 2500, size=800)], dtype=object)
    character_weights = 1.0 / np.arange(1, len(characters) + 1) ** 0.9
    character_weights /= character_weights.sum()
    dumps = orjson.dumps
    canonical = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    newline = orjson.OPT_APPEND_NEWLINE
    join = " ".join
    hasher = hashlib.sha256()
    size = 0
    with open(path, "wb") as handle:
        for start in range(0, rows, 10_000):
            count = min(10_000, rows - start)
            prompt_words = rng.integers(6, 22, size=count)
            response_words = rng.integers(18, 52, size=count)
            words = vocabulary[rng.choice(len(vocabulary), size=int(prompt_words.sum() + response_words.sum()),
                                          p=word_weights)].tolist()
            chinese = "".join(characters[rng.choice(len(characters), size=count * 20, p=character_weights)].tolist())
            w = c = 0
            lines = []
            for offset, (a, b) in enumerate(zip(prompt_words.tolist(), response_words.tolist())):
                i = start + offset
                if i % 10 == 7:
                    prompt, response = chinese[c:c + a] + "？", chinese[c + a:c + a + 2 * b] + "。"
                    c += a + 2 * b
                else:
                    prompt, response = join(words[w:w + a]) + "?", join(words[w + a:w + a + b]) + "."
                w += a + b
                system = SYSTEMS[i % len(SYSTEMS)] if i % 3 == 0 else None
                record = {"prompt": prompt, "response": response}
                if system is not None:
                    record["system"] = system
                line = dumps(record, option=newline)
                size += len(line)
                lines.append(line)
                hasher.update(dumps({"prompt": prompt, "response": response, "system": system}, option=canonical))
            handle.write(b"".join(lines))
    return DataFile(path=path, rows=rows, size=size, content_hash=hasher.hexdigest())


# --- child processes --------------------------------------------------------------------------------------
# Each phase runs in a fresh interpreter (`bench/ingest.py --child MODE SPEC`), so that its peak RSS
# is its own; it prints one line RESULT_MARK + JSON on stdout.


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Timers:
    """Wraps functions (module or class attributes) to add up the time spent in them."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)
        seconds, calls = self.seconds, self.calls
        seconds.setdefault(label, 0.0)
        calls.setdefault(label, 0)

        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - began
                calls[label] += 1

        timed.__wrapped__ = original
        setattr(owner, name, timed)


def child_upload(spec: dict) -> dict:
    from django.core.files import File

    from lode.core import artifacts
    from lode.datasets import services

    class DiskUpload(File):
        """An uploaded file already on disk, as Django's TemporaryUploadedFile is."""

        def __init__(self, path: str, name: str):
            super().__init__(open(path, "rb"), name=name)
            self._path = path
            self.size = os.path.getsize(path)

        def temporary_file_path(self) -> str:
            return self._path

    timers = _Timers()
    timers.wrap(services, "_sniff", "sniff")
    timers.wrap(artifacts, "file_put", "s3_put")
    upload_file = DiskUpload(spec["path"], FILENAME)
    rss_before, cpu_before = _maxrss_bytes(), _cpu_seconds()
    began = time.perf_counter()
    try:
        upload, version = services.upload_direct(tenant_id=spec["tenant_id"], dataset_id=spec["dataset_id"],
                                                 file=upload_file, declared_format=None, column_mapping=None)
    finally:
        upload_file.close()
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "phases": timers.seconds, "upload_id": str(upload.id), "version_id": str(version.id),
            "job_id": str(version.job_id), "size": upload.size, "rss_before": rss_before, "rss_peak": _maxrss_bytes(),
            "cpu_s": _cpu_seconds() - cpu_before}


def child_job(spec: dict) -> dict:
    from lode.core import artifacts
    from lode.core.jobs.runner import job_execute
    from lode.datasets import ingest as ingest_module
    from lode.datasets import jobs, services, shards
    from lode.datasets.operations import filters, stats  # noqa: F401  (stats: imported by the handler on use)

    if jobs.ROWS_PER_SHARD != ROWS_PER_SHARD:
        raise BenchError(f"lode.datasets.jobs.ROWS_PER_SHARD is {jobs.ROWS_PER_SHARD}, the benchmark expects {ROWS_PER_SHARD}")
    # What a worker process does as it starts (celery's worker_process_init, see lode.datasets.apps):
    # load the language model the statistics use. Not part of a job's time.
    jobs.worker_warm_up()
    timers = _Timers()
    timers.wrap(jobs, "version_delete_objects", "clear_prefix")
    timers.wrap(artifacts, "file_get", "fetch")
    timers.wrap(ingest_module, "ingest", "ingest")
    timers.wrap(shards.ShardWriter, "write", "shard_write")
    timers.wrap(artifacts, "object_put", "shard_s3_put")
    timers.wrap(jobs.VersionStats, "update", "stats_update")
    timers.wrap(jobs.VersionStats, "result", "stats_result")
    timers.wrap(services, "version_build_finish", "finish")
    timers.wrap(filters, "_identifier", "langid")  # loaded at worker start above: ~0 here unless that changes
    # The handler's modules (pyarrow, orjson, the parser, the statistics) are imported above, to
    # wrap their functions, before the clock starts: as in a worker that has run a job before. The
    # model langid loads on its first call (once per process) is timed, and reported apart.
    rss_before, cpu_before = _maxrss_bytes(), _cpu_seconds()
    began = time.perf_counter()
    state = job_execute(tenant_id=spec["tenant_id"], job_id=spec["job_id"])
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "state": state, "phases": timers.seconds, "calls": timers.calls,
            "rss_before": rss_before, "rss_peak": _maxrss_bytes(), "cpu_s": _cpu_seconds() - cpu_before}


def child_baseline(spec: dict) -> dict:
    from django.db import models

    class BenchIngestRow(models.Model):
        id = models.BigAutoField(primary_key=True)
        prompt = models.TextField()
        response = models.TextField()
        system = models.TextField(null=True)

        class Meta:
            managed = False
            app_label = "bench_ingest"
            db_table = spec["table"]

    create = BenchIngestRow.objects.bulk_create
    loads = json.loads
    rows = 0
    insert_s = 0.0
    batch: list[BenchIngestRow] = []
    rss_before, cpu_before = _maxrss_bytes(), _cpu_seconds()
    began = time.perf_counter()
    with open(spec["path"], "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = loads(line)
            batch.append(BenchIngestRow(prompt=record["prompt"], response=record["response"], system=record.get("system")))
            if len(batch) == BASELINE_BATCH:
                started = time.perf_counter()
                create(batch, batch_size=BASELINE_BATCH)
                insert_s += time.perf_counter() - started
                rows += len(batch)
                batch = []
    if batch:
        started = time.perf_counter()
        create(batch, batch_size=BASELINE_BATCH)
        insert_s += time.perf_counter() - started
        rows += len(batch)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "rows": rows, "insert_s": insert_s, "rss_before": rss_before,
            "rss_peak": _maxrss_bytes(), "cpu_s": _cpu_seconds() - cpu_before}


CHILDREN = {"upload": child_upload, "job": child_job, "baseline": child_baseline}


def child_main(mode: str, spec_json: str) -> int:
    import django

    django.setup()
    try:
        result = CHILDREN[mode](json.loads(spec_json))
    except BaseException:
        traceback.print_exc()
        return 1
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


def child_run(mode: str, spec: dict, *, timeout: float) -> dict:
    """Runs one phase in a fresh interpreter and returns what it printed."""
    # As in production: with DEBUG on (the dev settings' default) Django keeps every statement's SQL
    # in connection.queries, megabytes per bulk_create of 5,000 rows, which would slow and swell
    # the baseline.
    return child_result(str(Path(__file__).resolve()), mode, spec, mark=RESULT_MARK,
                        env=child_env({"LODE_DEBUG": "false"}), timeout=timeout)


# --- set-up, checks and clean-up ----------------------------------------------------------------------------


def cpu_consumers() -> list[str]:
    """Celery workers that consume the `cpu` queue: one would take the benchmark's ingest job."""
    from lode.celery import app

    replies = app.control.inspect(timeout=1.5).active_queues() or {}
    return sorted(node for node, queues in replies.items() if any(q.get("name") == "cpu" for q in queues))


def organization_create() -> tuple[str, str]:
    from tenants.services import user_signup

    token = uuid.uuid4().hex[:12]
    result = user_signup(email=f"bench-ingest-{token}@example.com", password=f"Bench-{uuid.uuid4().hex}",
                         organization_name=f"Bench ingest {token}")
    return str(result.organization.id), token


def _owner_execute(sql: str, params: list | None = None, *, fetch: bool = False):
    from django.db import connections

    with connections["owner"].cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall() if fetch else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def baseline_table_create() -> str:
    """The baseline's own table (no row-level security: it belongs to the benchmark), granted to the
    application role. Tables left by runs whose process is gone are dropped first."""
    from django.db import connections

    for (name,) in _owner_execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                                  " AND tablename LIKE %s", [TABLE_PREFIX + "%"], fetch=True):
        suffix = name[len(TABLE_PREFIX):]
        if suffix.isdigit() and not _pid_alive(int(suffix)):
            _owner_execute(f'DROP TABLE IF EXISTS "{name}"')
            log(f"  dropped {name}, left by an earlier run")
    table = f"{TABLE_PREFIX}{os.getpid()}"
    app_role = connections["default"].settings_dict["USER"]
    _owner_execute(f'DROP TABLE IF EXISTS "{table}"')
    _owner_execute(f'CREATE TABLE "{table}" (id bigserial PRIMARY KEY, prompt text NOT NULL, response text NOT NULL,'
                   f' system text)')
    _owner_execute(f'GRANT SELECT, INSERT ON "{table}" TO "{app_role}"')
    _owner_execute(f'GRANT USAGE ON SEQUENCE "{table}_id_seq" TO "{app_role}"')
    return table


def baseline_table_count(table: str) -> int:
    return _owner_execute(f'SELECT count(*) FROM "{table}"', fetch=True)[0][0]


def baseline_table_truncate(table: str) -> None:
    _owner_execute(f'TRUNCATE "{table}" RESTART IDENTITY')


def baseline_table_drop(table: str) -> None:
    _owner_execute(f'DROP TABLE IF EXISTS "{table}"')


@dataclass
class Check:
    problems: list[str]
    shards: int = 0
    size_bytes: int = 0
    rejected: int = 0
    stats_rows: int = 0


def version_check(*, tenant_id: str, version_id: str, job_id: str, data: DataFile) -> Check:
    from lode.core import artifacts
    from lode.core.models import Job
    from lode.datasets.models import DatasetVersion, Upload
    from tenants.db_context import tenant_atomic

    with tenant_atomic(tenant_id):
        version = DatasetVersion.objects.get(id=version_id)
        job = Job.objects.get(id=job_id)
        upload = Upload.objects.get(id=version.upload_id) if version.upload_id else None
    problems = []
    if job.state != "succeeded":
        problems.append(f"job {job.state}: {job.error or ''}"[:500])
    if version.status != DatasetVersion.Status.READY:
        problems.append(f"version {version.status}: {version.report.get('error', '')}"[:500])
    if version.row_count != data.rows:
        problems.append(f"version has {version.row_count:,} rows, not {data.rows:,}")
    if not version.content_hash:
        problems.append("version has no content hash")
    elif version.content_hash != data.content_hash:
        problems.append(f"content hash {version.content_hash} != {data.content_hash} (the file's, computed by the benchmark)")
    expected_shards = -(-data.rows // ROWS_PER_SHARD)
    if version.shard_count != expected_shards:
        problems.append(f"{version.shard_count} shards, not {expected_shards}")
    if version.status == DatasetVersion.Status.READY:
        stored = [o for o in artifacts.object_list(tenant_id=tenant_id, prefix=version.prefix) if o.key.endswith(".parquet")]
        if len(stored) != version.shard_count:
            problems.append(f"{len(stored)} shard objects under the version's prefix, not {version.shard_count}")
    if upload is None or upload.status != Upload.Status.INGESTED:
        problems.append(f"upload {upload.status if upload else 'missing'}")
    rejected = int(version.report.get("rejected", 0) or 0)
    if rejected:
        problems.append(f"{rejected} rows rejected: {version.report.get('rejected_samples', [])[:3]}")
    return Check(problems=problems, shards=version.shard_count, size_bytes=version.size_bytes, rejected=rejected,
                 stats_rows=int((version.stats or {}).get("rows", 0) or 0))


def dataset_remove(tenant_id: str, dataset_id: str) -> str:
    """The round's dataset: its S3 objects, then its rows (uploads and versions go with it)."""
    from lode.core import artifacts
    from lode.datasets.models import Dataset
    from tenants.db_context import tenant_atomic

    try:
        removed = artifacts.prefix_delete(tenant_id=tenant_id, prefix=f"datasets/{dataset_id}/")
        with tenant_atomic(tenant_id):
            Dataset.objects.filter(id=dataset_id).delete()
    except Exception as exc:  # clean-up is best effort; the figures are already taken
        return f"could not remove dataset {dataset_id}: {type(exc).__name__}: {exc}"
    return f"removed dataset {dataset_id} ({removed} objects)"


# --- rounds ------------------------------------------------------------------------------------------------


@dataclass
class Round:
    upload: dict
    job: dict
    baseline: dict
    check: Check
    rows: int

    @property
    def upload_s(self) -> float:
        return self.upload["seconds"]

    @property
    def job_s(self) -> float:
        return self.job["seconds"]

    @property
    def rate(self) -> float:
        return self.rows / (self.upload_s + self.job_s)

    @property
    def job_rate(self) -> float:
        return self.rows / self.job_s

    @property
    def baseline_rate(self) -> float:
        return self.baseline["rows"] / self.baseline["seconds"]

    @property
    def peak_rss(self) -> int:
        return max(self.upload["rss_peak"], self.job["rss_peak"])


@dataclass
class Run:
    rounds: list[Round] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)  # not removed yet
    skipped: int = 0  # rounds left out to stay within --time-budget
    load_start: float = 0.0  # 1-minute load average when the measurements began


def one_round(index: int, args: argparse.Namespace, *, tenant_id: str, token: str, data: DataFile, table: str,
              state: Run) -> Round:
    from lode.datasets.services import dataset_create

    limit = max(120.0, data.rows / 2_000)
    dataset = dataset_create(tenant_id=tenant_id, name=f"bench-ingest-{token}-{index}", modality="instruction",
                             description="bench/ingest.py")
    state.datasets.append(str(dataset.id))
    log(f"round {index}: Lode: upload_direct ({data.size / 1e6:,.0f} MB) ...")
    upload = child_run("upload", {"tenant_id": tenant_id, "dataset_id": str(dataset.id), "path": data.path}, timeout=limit)
    log(f"  stored in {upload['seconds']:.2f} s (sniff {upload['phases']['sniff']:.2f} s, S3 put"
        f" {upload['phases']['s3_put']:.2f} s); job {upload['job_id']} ...")
    job = child_run("job", {"tenant_id": tenant_id, "job_id": upload["job_id"]}, timeout=limit)
    if job["state"] is None:
        raise BenchError("job_execute found nothing to run: another worker took the job (is one consuming the cpu"
                         " queue?)")
    check = version_check(tenant_id=tenant_id, version_id=upload["version_id"], job_id=upload["job_id"], data=data)
    if check.problems:
        raise BenchError(f"round {index}: the version is not what the file holds: " + "; ".join(check.problems))
    log(f"  job {job['state']} in {job['seconds']:.2f} s ({data.rows / job['seconds']:,.0f} rows/s); end to end"
        f" {data.rows / (upload['seconds'] + job['seconds']):,.0f} rows/s; peak RSS {job['rss_peak'] / 2**20:,.0f} MiB;"
        f" version ready, {data.rows:,} rows, {check.shards} shards, content hash matches")
    log(f"round {index}: baseline: json.loads + bulk_create(batch_size={BASELINE_BATCH:,}) into {table} ...")
    baseline_table_truncate(table)
    baseline = child_run("baseline", {"table": table, "path": data.path}, timeout=max(300.0, data.rows / 500))
    counted = baseline_table_count(table)
    if counted != data.rows or baseline["rows"] != data.rows:
        raise BenchError(f"round {index}: the baseline inserted {baseline['rows']:,} rows, its table holds {counted:,},"
                         f" the file {data.rows:,}")
    baseline_table_truncate(table)
    log(f"  {data.rows / baseline['seconds']:,.0f} rows/s ({baseline['seconds']:.2f} s, of which bulk_create"
        f" {baseline['insert_s']:.2f} s); peak RSS {baseline['rss_peak'] / 2**20:,.0f} MiB")
    return Round(upload=upload, job=job, baseline=baseline, check=check, rows=data.rows)


# --- report ------------------------------------------------------------------------------------------------


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def job_phases(job: dict) -> dict[str, float]:
    """The job's time split into what it did (seconds); `other` is the rest (claim, heartbeat,
    progress writes, imports on first use, loading the version)."""
    p = job["phases"]
    parse = p["ingest"] - p["shard_write"] - p["stats_update"]
    phases = {
        "fetch the upload from S3": p["fetch"],
        "read rows: parse, check, hash, build columns": parse,
        "Parquet encode (zstd)": p["shard_write"] - p["shard_s3_put"],
        "S3 put of the shards": p["shard_s3_put"],
        "statistics per shard (Arrow)": p["stats_update"],
        "statistics at the end (sampled text)": p["stats_result"] - p["langid"],
        "  loading langid's model (first use in a process)": p["langid"],
        "clear prefix + final transaction": p["clear_prefix"] + p["finish"],
    }
    phases["other (claim, progress, loading)"] = job["seconds"] - sum(phases.values())
    return phases


def report(state: Run, args: argparse.Namespace, data: DataFile, total_s: float) -> None:
    med = statistics.median
    rounds = state.rounds
    n = len(rounds)
    rate = med([r.rate for r in rounds])
    job_rate = med([r.job_rate for r in rounds])
    baseline = med([r.baseline_rate for r in rounds])
    ratio = rate / baseline if baseline > 0 else float("inf")
    peak_rss = max(r.peak_rss for r in rounds)
    upload_s = med([r.upload_s for r in rounds])
    job_s = med([r.job_s for r in rounds])
    log("")
    log(f"ingest: {data.rows:,} instruction pairs, JSONL, {data.size / 1e6:,.1f} MB ({data.size / data.rows:.0f} bytes a row);"
        f" {n} round{'s' if n > 1 else ''}, figures are medians of the per-round values" + ("" if n > 1 else " (one round)")
        + (f"; {state.skipped} more round(s) skipped to stay within the {args.time_budget_s:.0f} s budget" if state.skipped else ""))
    log(f"this machine has {os.cpu_count()} CPUs, shared by the benchmark's process, PostgreSQL and the S3 server (s3rver);"
        f" 1-minute load average {state.load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.")
    if max(state.load_start, os.getloadavg()[0]) > (os.cpu_count() or 1):
        log("NOTE: the load was above the CPU count: other processes competed for the CPUs and slowed both paths"
            " (the baseline's PostgreSQL inserts and the job's parse alike); figures vary with them.")
    log("")
    log(f"{'path':<60} {'seconds':>9} {'rows/s':>10} {'peak RSS':>10}")
    log(f"{'lode: upload_direct (sniff, store to S3, version + job)':<60} {upload_s:>9.2f} {'':>10}"
        f" {_mib(max(r.upload['rss_peak'] for r in rounds)):>10}")
    log(f"{'lode: job datasets.ingest (job_execute -> version ready)':<60} {job_s:>9.2f} {job_rate:>10,.0f}"
        f" {_mib(max(r.job['rss_peak'] for r in rounds)):>10}")
    log(f"{'lode: end to end (upload + job)':<60} {med([r.upload_s + r.job_s for r in rounds]):>9.2f} {rate:>10,.0f}"
        f" {_mib(peak_rss):>10}")
    log(f"{'baseline: json.loads + bulk_create, batches of 5,000':<60} {med([r.baseline['seconds'] for r in rounds]):>9.2f}"
        f" {baseline:>10,.0f} {_mib(max(r.baseline['rss_peak'] for r in rounds)):>10}")
    log(f"ratio lode end to end / baseline: {ratio:.2f}x (job only / baseline: {job_rate / baseline:.2f}x)")
    warm = med([r.rows / (r.upload_s + r.job_s - r.job["phases"]["langid"]) for r in rounds])
    log(f"a worker process that has built a version before has langid's model loaded"
        f" ({med([r.job['phases']['langid'] for r in rounds]):.2f} s less): {warm:,.0f} rows/s end to end,"
        f" {warm / baseline:.2f}x the baseline (not the BENCH line's figure)")
    log("")
    upload_phases = {
        "sniff (first MB: format, encoding, columns)": med([r.upload["phases"]["sniff"] for r in rounds]),
        "store to S3 (multipart, 8 MiB parts)": med([r.upload["phases"]["s3_put"] for r in rounds]),
    }
    upload_phases["rows: upload, version, job, audit"] = upload_s - sum(upload_phases.values())
    log(f"upload ({upload_s:.2f} s; CPU of its process {med([r.upload['cpu_s'] for r in rounds]):.2f} s):")
    for name, seconds in upload_phases.items():
        log(f"  {name:<52} {seconds:>7.2f} s")
    per_round = [job_phases(r.job) for r in rounds]
    log(f"job ({job_s:.2f} s; CPU of its process {med([r.job['cpu_s'] for r in rounds]):.2f} s;"
        f" {med([r.check.shards for r in rounds]):.0f} shards, {med([r.check.size_bytes for r in rounds]) / 1e6:,.1f} MB"
        f" of Parquet):")
    for name in per_round[0]:
        seconds = med([phases[name] for phases in per_round])
        log(f"  {name:<52} {seconds:>7.2f} s  {seconds / job_s:>5.0%}")
    log(f"baseline ({med([r.baseline['seconds'] for r in rounds]):.2f} s): bulk_create"
        f" {med([r.baseline['insert_s'] for r in rounds]):.2f} s, reading + json.loads + model instances"
        f" {med([r.baseline['seconds'] - r.baseline['insert_s'] for r in rounds]):.2f} s")
    log(f"peak RSS (ru_maxrss): job process {_mib(max(r.job['rss_peak'] for r in rounds))}"
        f" (after Django's start-up, before the job: {_mib(max(r.job['rss_before'] for r in rounds))}),"
        f" upload process {_mib(max(r.upload['rss_peak'] for r in rounds))}")
    for i, r in enumerate(rounds, start=1):
        log(f"  round {i}: upload {r.upload_s:.2f} s + job {r.job_s:.2f} s = {r.rate:,.0f} rows/s (job only"
            f" {r.job_rate:,.0f}), peak RSS {_mib(r.job['rss_peak'])} | baseline {r.baseline_rate:,.0f} rows/s"
            f" in {r.baseline['seconds']:.2f} s")
    log(f"checks: every round's version ready with {data.rows:,} rows, 0 rejected, {rounds[0].check.shards} shards, the"
        f" content hash the benchmark computed ({data.content_hash[:16]}...); baseline tables held {data.rows:,} rows")
    log(f"whole run: {total_s:.0f} s")
    met = rate >= TARGET_ROWS_PER_S and peak_rss < TARGET_RSS_BYTES and ratio >= TARGET_RATIO
    log(f'BENCH ingest rows_per_s={rate:.0f} baseline={baseline:.0f} ratio={ratio:.2f} '
        f'target="{TARGET_TEXT}" met={"yes" if met else "no"}')


# --- main ----------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    args.rows = args.rows or (200_000 if args.quick else 1_000_000)
    args.rounds = args.rounds or 3
    # --quick must finish in two minutes: a round that would end past the budget is not started.
    budget_s = args.time_budget_s = args.time_budget if args.time_budget is not None else (115.0 if args.quick else 0.0)
    migrate()

    import django

    django.setup()
    others = cpu_consumers()
    if others:
        raise BenchError(f"Celery workers consume the cpu queue and would take the ingest job: {', '.join(others)};"
                         " stop them first")
    state = Run(load_start=os.getloadavg()[0])
    tenant_id = token = ""
    table = ""
    folder = tempfile.TemporaryDirectory(prefix="lode-bench-ingest-")
    try:
        log(f"writing {args.rows:,} instruction pairs as JSONL (seed {SEED}) ...")
        started = time.perf_counter()
        data = data_generate(os.path.join(folder.name, FILENAME), args.rows)
        log(f"  {data.size / 1e6:,.1f} MB, {data.size / data.rows:.0f} bytes a row, in {time.perf_counter() - started:.1f} s")
        tenant_id, token = organization_create()
        table = baseline_table_create()
        log(f"organization {tenant_id}; baseline table {table}")
        for index in range(1, args.rounds + 1):
            round_began = time.perf_counter()
            state.rounds.append(one_round(index, args, tenant_id=tenant_id, token=token, data=data, table=table, state=state))
            if not args.keep:
                log("  " + dataset_remove(tenant_id, state.datasets.pop()))
            elapsed, last = time.perf_counter() - began, time.perf_counter() - round_began
            if budget_s and index < args.rounds and elapsed + last > budget_s:
                state.skipped = args.rounds - index
                log(f"  (another round would end past the {budget_s:.0f} s budget: {elapsed:.0f} s so far, {last:.0f} s a"
                    f" round; the remaining {state.skipped} round(s) are skipped)")
                break
    finally:
        if table:
            baseline_table_drop(table)
        folder.cleanup()
        if not args.keep:
            for dataset_id in state.datasets:  # a round that failed
                log(dataset_remove(tenant_id, dataset_id))
    report(state, args, data, time.perf_counter() - began)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        return child_main(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200,000 rows, up to 3 rounds within 115 s")
    parser.add_argument("--rows", type=int, default=None, help="rows in the file (default 1,000,000; --quick 200,000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3); figures are medians")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds: no round is started that would end past it (default: --quick 115, else none)")
    parser.add_argument("--keep", action="store_true", help="keep the rounds' datasets (S3 objects and rows)")
    args = parser.parse_args()
    if (args.rows is not None and args.rows < 1) or (args.rounds is not None and args.rounds < 1):
        parser.error("--rows and --rounds must be positive")
    return run_cli("ingest", run, args)


if __name__ == "__main__":
    sys.exit(main())
