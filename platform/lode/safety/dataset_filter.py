"""The `safety_filter` dataset operation: every row's text through the tenant's policy (the
version in force when the operation starts, named in the new version's report). Blocked rows are
dropped; flagged rows are dropped or kept (`flagged`: drop | keep) and, up to `max_queued`, put in
the moderation queue; text the policy redacts is redacted field by field."""
from __future__ import annotations

from typing import Any


from lode.core.errors import ValidationFailed

KNOWN = {"fields", "flagged", "max_queued", "semantic"}
MAX_SAMPLES = 20


def _fail(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"params.{name}: {message}", details={"field": f"params.{name}"})


def safety_filter_validate(params: dict[str, Any], modality) -> dict[str, Any]:
    fields = params.get("fields")
    if fields is None:
        fields = list(modality.text_fields)
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise _fail("fields", "a non-empty list of field names")
    unknown = [f for f in fields if f not in modality.text_fields]
    if unknown:
        raise _fail("fields", f"{unknown[0]!r} is not a text field of {modality.name} ({', '.join(modality.text_fields)})")
    flagged = params.get("flagged", "drop")
    if flagged not in ("drop", "keep"):
        raise _fail("flagged", "drop or keep")
    max_queued = params.get("max_queued", 1000)
    if isinstance(max_queued, bool) or not isinstance(max_queued, int) or not 0 <= max_queued <= 100_000:
        raise _fail("max_queued", "a whole number from 0 to 100000")
    semantic = params.get("semantic", False)
    if not isinstance(semantic, bool):
        raise _fail("semantic", "true or false")
    return {"fields": fields, "flagged": flagged, "max_queued": max_queued, "semantic": semantic}


def safety_filter_run(ctx, parent, modality, options, writer):
    from lode.datasets.jobs import _parent_tables, _write_rows
    from lode.datasets.schemas import row_texts

    from .checks import texts_check
    from .policies import policy_current

    policy = policy_current(ctx.tenant_id)
    fields = tuple(options["fields"])
    counts = {"checked": 0, "allowed": 0, "blocked": 0, "flagged": 0, "redacted": 0, "queued": 0}
    by_category: dict[str, int] = {}
    samples: list[dict[str, Any]] = []
    schema = None
    row_number = 0
    for table in _parent_tables(ctx, parent):
        schema = table.schema
        rows = table.to_pylist()
        texts = ["\n".join(row_texts(modality, row, fields)) for row in rows]
        queue_left = options["max_queued"] - counts["queued"]
        results = texts_check(tenant_id=ctx.tenant_id, texts=texts, source="dataset_row", full=options["semantic"],
                              record="flagged", policy=policy, hold=False, queue=queue_left > 0,
                              source_ref=f"version:{parent.id}:rows-{row_number + 1}",
                              context={"version_id": str(parent.id), "first_row": row_number + 1})
        out = []
        for row, result in zip(rows, results):
            row_number += 1
            counts["checked"] += 1
            for category in result.categories:
                by_category[category] = by_category.get(category, 0) + 1
            if result.action != "allow" and len(samples) < MAX_SAMPLES:
                samples.append({"row": row_number, "action": result.action, "categories": result.categories})
            if result.item_id:
                counts["queued"] += 1
            if result.action == "block":
                counts["blocked"] += 1
                continue
            if result.action == "flag":
                counts["flagged"] += 1
                if options["flagged"] == "drop":
                    continue
            if result.action in ("redact", "flag"):
                row = _redact_fields(ctx.tenant_id, modality, row, fields, policy, counts)
            else:
                counts["allowed"] += 1
            out.append(row)
        _write_rows(writer, out, schema)
    extra = [name for name in (schema.names if schema else []) if name not in modality.field_names]
    return {"policy_version": policy.version, "counts": counts, "categories": by_category, "samples": samples}, extra


def _redact_fields(tenant_id, modality, row: dict, fields, policy, counts) -> dict:
    """Each text field checked on its own (no decision recorded: the row's is) and redacted."""
    from .checks import texts_check

    row = dict(row)
    for name in fields:
        value = row.get(name)
        if isinstance(value, str) and value:
            [result] = texts_check(tenant_id=tenant_id, texts=[value], source="dataset_row", full=False, record="none",
                                   policy=policy)
            if result.redacted is not None:
                row[name] = result.redacted
                counts["redacted"] += 1
        elif isinstance(value, list):  # chat messages
            contents = [message.get("content") or "" for message in value]
            checked = texts_check(tenant_id=tenant_id, texts=contents, source="dataset_row", full=False, record="none",
                                  policy=policy)
            if any(result.redacted is not None for result in checked):
                counts["redacted"] += 1
                row[name] = [{**message, "content": result.redacted if result.redacted is not None else message["content"]}
                             for message, result in zip(value, checked)]
    return row


