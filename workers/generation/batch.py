"""Batch generation jobs (`generation.batch`, gpu queue): one output per row of a dataset version,
written as a new synthetic version of the same dataset (lode.generation.batch checks and freezes
the request).

Rows go through the TextEngine in chunks, so a chunk's prompts run in one continuous batch. Each
finished chunk is a Parquet shard; with it the job meters the chunk's tokens (idempotency keys
per shard) and saves a checkpoint (rows done, shards, counts), so a worker lost mid-job resumes at
the next chunk and a re-delivered job bills nothing twice. A row whose prompt cannot be built (a
variable empty in that row), is refused by the safety policy, or is too long for the model is
left out and counted. The policy applies row by row, as it does to interactive requests: each
prompt message is reviewed on its own and what it redacts is redacted before the model sees it;
an output it blocks is left out ("output_blocked"), one it holds for review too ("output_held":
it waits in the moderation queue, with the job and row as its source), one it redacts is written
redacted. The version's statistics and
content hash are computed over the written shards at the end, as any version's are."""
from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import orjson
import pyarrow as pa

from lode.core.jobs.runner import JobContext

CHUNK_ROWS = int(os.environ.get("LODE_GENERATION_BATCH_CHUNK_ROWS", "256"))
SAMPLE_REJECTS = 20


def _row_input(row: dict[str, Any], *, template, input_field: str | None, chat: bool):
    """(messages, prompt) for a row, or None with why when the row has nothing to prompt with."""
    if template is not None:
        shape, constants, examples, max_examples = template
        values = dict(constants)
        for name in shape.variables:
            value = row.get(name)
            if isinstance(value, str) and value.strip():
                values[name] = value
        missing = [name for name in shape.variables if name not in values and name not in shape.defaults]
        if missing:
            return None, f"no value for {missing[0]}"
        from lode.generation.templates import render

        rendered = render(shape, values, examples=examples, max_examples=max_examples)
        return (rendered.messages(), None) if chat else (None, rendered.prompt()), None
    value = row.get(input_field)
    if input_field == "messages" and isinstance(value, list):
        turns = list(value)
        while turns and turns[-1].get("role") == "assistant":
            turns.pop()
        if not turns:
            return None, "no turn before the last assistant message"
        return (turns, None) if chat else (None, "\n".join(turn["content"] for turn in turns)), None
    if not isinstance(value, str) or not value.strip():
        return None, f"{input_field} is empty"
    return ([{"role": "user", "content": value}], None) if chat else (None, value), None


def batch_run(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    import torch

    from lode.datasets import services as dataset_services
    from lode.datasets.jobs import VersionStats, _building, _load, _refuse_failed, _schema_of
    from lode.datasets.models import DatasetVersion
    from lode.datasets.schemas import modality_get
    from lode.datasets.shards import ShardWriter, shard_row_counts, shard_tables
    from lode.generation.templates import Template

    from .loading import adapter_folder, text_engine_load

    version = _load(ctx.tenant_id, params["version_id"])
    if version.status == DatasetVersion.Status.READY:
        return {"version_id": str(version.id), "rows": version.row_count}
    _refuse_failed(version)
    parent = version.parent
    modality = modality_get(version.modality)
    output_field = params["output_field"]
    sampling_params = params["params"]
    frozen = params["template"]
    template = None
    if frozen:
        template = (Template(template=frozen["template"], system=frozen["system"], defaults=frozen["defaults"]),
                    frozen["constants"], frozen["examples"], frozen["max_examples"])
    model = params["model"]
    adapter = model["adapter"]
    tenant = str(ctx.tenant_id)

    checkpoint = dict(ctx.checkpoint)
    rows_done = int(checkpoint.get("rows_done", 0))
    counts: dict[str, int] = dict(checkpoint.get("counts") or {})
    rejects: list[dict[str, Any]] = list(checkpoint.get("rejects") or [])
    tokens = dict(checkpoint.get("tokens") or {"input": 0, "output": 0})
    writer = ShardWriter(tenant_id=ctx.tenant_id, prefix=version.prefix)
    writer.shards = int(checkpoint.get("shards", 0))
    writer.rows = int(checkpoint.get("rows", 0))
    writer.bytes = int(checkpoint.get("bytes", 0))
    if rows_done:
        ctx.usage_resend_last()
        ctx.log("resuming from the last chunk", rows_done=rows_done, shards=writer.shards)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with _building(ctx, version):
        engine = text_engine_load(model["base"], device=device, max_batch=64,
                                  adapter_folder=lambda name: adapter_folder(tenant_id=tenant, adapter=adapter))
        try:
            chat = bool(getattr(engine.tokenizer, "chat_template", None))
            started = time.monotonic()
            row_number = 0
            pending: list[dict[str, Any]] = []
            schema: pa.Schema | None = None
            for table in shard_tables(tenant_id=ctx.tenant_id, prefix=parent.prefix, shard_count=parent.shard_count):
                if schema is None:
                    schema = table.schema if output_field in table.column_names else table.schema.append(
                        pa.field(output_field, pa.string()))
                if row_number + table.num_rows <= rows_done:
                    row_number += table.num_rows
                    continue
                for row in table.to_pylist():
                    row_number += 1
                    if row_number <= rows_done:
                        continue
                    pending.append({"row": row, "number": row_number})
                    if len(pending) == CHUNK_ROWS:
                        _chunk(ctx, engine, pending, schema=schema, writer=writer, template=template, chat=chat,
                               input_field=params["input_field"], output_field=output_field, sampling_params=sampling_params,
                               adapter=adapter, counts=counts, rejects=rejects, tokens=tokens, model=model)
                        rows_done = row_number
                        _checkpoint(ctx, writer, rows_done, counts, rejects, tokens)
                        elapsed = time.monotonic() - started
                        ctx.progress(rows_done / max(parent.row_count, 1),
                                     f"{rows_done}/{parent.row_count} rows ({writer.rows} written, "
                                     f"{tokens['output'] / max(elapsed, 1e-9):.0f} tokens/s)")
                        pending = []
            if pending:
                _chunk(ctx, engine, pending, schema=schema, writer=writer, template=template, chat=chat,
                       input_field=params["input_field"], output_field=output_field, sampling_params=sampling_params,
                       adapter=adapter, counts=counts, rejects=rejects, tokens=tokens, model=model)
                rows_done = row_number
                _checkpoint(ctx, writer, rows_done, counts, rejects, tokens)
        finally:
            engine.stop()
            writer.close()
        ctx.progress(0.99, "statistics", force=True)
        extra = [name for name in (schema.names if schema else []) if name not in modality.field_names]
        stats = VersionStats(modality)
        digest = hashlib.sha256()
        for table in shard_tables(tenant_id=ctx.tenant_id, prefix=version.prefix, shard_count=writer.shards):
            stats.update(table)
            for row in table.to_pylist():
                digest.update(orjson.dumps(row, option=orjson.OPT_SORT_KEYS))
                digest.update(b"\n")
        if sum(shard_row_counts(tenant_id=ctx.tenant_id, prefix=version.prefix, shard_count=writer.shards)) != writer.rows:
            raise RuntimeError("the written shards do not hold the rows counted")
        built = dataset_services.version_build_finish(
            tenant_id=ctx.tenant_id, version_id=version.id, row_count=writer.rows, shard_count=writer.shards,
            size_bytes=writer.bytes, content_hash=digest.hexdigest(), schema=_schema_of(modality, extra),
            report={"input_rows": parent.row_count, "output_rows": writer.rows, "left_out": counts,
                    "left_out_sample": rejects, "tokens": tokens, "model": model["name"],
                    "template": {"name": frozen["name"], "version": frozen["version"]} if frozen else None},
            stats=stats.result(),
        )
    return {"version_id": str(built.id), "rows": built.row_count, "left_out": counts, "tokens": tokens}


def _leave_out(counts, rejects, number: int, reason: str, detail: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1
    if len(rejects) < SAMPLE_REJECTS:
        rejects.append({"row": number, "reason": reason, "detail": detail[:300]})


def _chunk(ctx, engine, pending, *, schema, writer, template, chat, input_field, output_field, sampling_params, adapter,
           counts, rejects, tokens, model) -> None:
    """Generates the chunk's rows in one continuous batch and writes the kept rows as one shard,
    metering the tokens it used."""
    from lode.billing.services import UsageInput, usage_record
    from lode.generation.completions import safety_review

    from .engine import Request
    from .loading import prompt_ids, sampling

    submitted = []
    for item in pending:
        (messages, prompt), why = _row_input(item["row"], template=template, input_field=input_field, chat=chat)
        if why:
            _leave_out(counts, rejects, item["number"], "no_input", why)
            continue
        ref = f"generation-job:{ctx.job_id}:row-{item['number']}"
        # Each message is reviewed on its own, so that what the policy redacts is redacted in the
        # message it was found in; a prompt the policy blocks leaves the row out.
        texts = [m["content"] for m in messages] if messages is not None else [prompt]
        verdicts = [safety_review(tenant_id=ctx.tenant_id, kind="prompt", text=text, ref=ref) for text in texts]
        blocked = [verdict for verdict in verdicts if not verdict.allowed]
        if blocked:
            _leave_out(counts, rejects, item["number"], "prompt_blocked",
                       ", ".join(dict.fromkeys(c for verdict in blocked for c in verdict.categories)))
            continue
        if messages is not None:
            messages = [{**message, "content": verdict.text} if verdict.text is not None else message
                        for message, verdict in zip(messages, verdicts)]
        elif verdicts[0].text is not None:
            prompt = verdicts[0].text
        seed = sampling_params.get("seed")
        request = Request(prompt_ids=prompt_ids(engine.tokenizer, messages=messages, prompt=prompt),
                               adapter=adapter["id"] if adapter else None,
                               params=sampling(sampling_params, seed=None if seed is None else seed + item["number"]))
        try:
            engine.submit(request)
        except ValueError as exc:
            _leave_out(counts, rejects, item["number"], "too_long", str(exc))
            continue
        submitted.append((item, request))
    rows, used_input, used_output = [], 0, 0
    for item, request in submitted:
        while not request.done.wait(1.0):
            ctx.check_cancelled()
        used_input += len(request.prompt_ids)
        used_output += request.generated
        if request.finish_reason == "error":
            _leave_out(counts, rejects, item["number"], "error", request.error or "")
            continue
        verdict = safety_review(tenant_id=ctx.tenant_id, kind="output", text=request.text,
                                ref=f"generation-job:{ctx.job_id}:row-{item['number']}")
        if not verdict.allowed:
            _leave_out(counts, rejects, item["number"], "output_blocked", ", ".join(verdict.categories))
            continue
        if verdict.held:  # withheld until a reviewer releases it: not written into the dataset
            _leave_out(counts, rejects, item["number"], "output_held", f"moderation item {verdict.item_id}")
            continue
        rows.append({**item["row"], output_field: request.text if verdict.text is None else verdict.text})
    if rows:
        writer.write(pa.Table.from_pylist(rows, schema=schema))
        writer.flush()
    tokens["input"] += used_input
    tokens["output"] += used_output
    key = f"generation-job:{ctx.job_id}:rows-{pending[0]['number']}"
    usage_record(tenant_id=ctx.tenant_id, events=[
        UsageInput(meter=meter, dimension=model["size_class"], quantity=quantity, idempotency_key=f"{key}:{part}",
                   source_type="job", source_id=str(ctx.job_id))
        for meter, part, quantity in (("input_tokens", "input", used_input), ("output_tokens", "output", used_output))
        if quantity])


def _checkpoint(ctx, writer, rows_done, counts, rejects, tokens) -> None:
    ctx.save_checkpoint({"rows_done": rows_done, "shards": writer.shards, "rows": writer.rows, "bytes": writer.bytes,
                         "counts": counts, "rejects": rejects, "tokens": tokens})
