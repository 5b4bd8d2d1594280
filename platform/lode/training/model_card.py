"""A fine-tuned model's card (Markdown): what it is, where it came from (base model, data versions
and their lineage), how it was trained, how it did, what the data's safety statistics say, and a
few held-out generations."""
from __future__ import annotations

from typing import Any
from uuid import UUID


def _lineage_lines(tenant_id: UUID | str, version_id: str | None) -> list[str]:
    from lode.datasets.selectors import version_lineage

    if not version_id:
        return []
    lines = []
    for version in version_lineage(tenant_id=tenant_id, version_id=version_id):
        lines.append(f"  - v{version.number} `{version.id}`: {version.operation}, {version.row_count} rows, "
                     f"content hash `{version.content_hash[:16]}`")
    return lines


def _data_findings(tenant_id: UUID | str, version_id: str) -> list[str]:
    from lode.datasets.selectors import version_get

    version = version_get(tenant_id=tenant_id, version_id=version_id)
    sample = (version.stats or {}).get("sample") or {}
    findings = []
    pii = (sample.get("pii") or {}).get("row_rates") or {}
    hits = {kind: rate for kind, rate in pii.items() if rate}
    sampled = (sample.get("pii") or {}).get("sample_rows", 0)
    if hits:
        listed = ", ".join(f"{kind} {rate:.1%}" for kind, rate in sorted(hits.items(), key=lambda item: -item[1]))
        findings.append(f"- PII in the training data (share of {sampled} sampled rows): {listed}. "
                        "Consider the PII redaction operation before training.")
    elif sampled:
        findings.append(f"- No PII found in {sampled} sampled rows of the training data.")
    languages = (sample.get("languages") or {}).get("shares") or {}
    if languages:
        findings.append("- Language mix of the training data: "
                        + ", ".join(f"{code} {share:.0%}" for code, share in list(languages.items())[:5]) + ".")
    duplicates = sample.get("exact_duplicates")
    if isinstance(duplicates, dict) and duplicates.get("rate"):
        findings.append(f"- Exact duplicates in the training data: {duplicates['rate']:.1%} of rows.")
    findings.append("- Toxicity: no content-safety scan of the training data is recorded for this model.")
    return findings


def model_card_render(*, tenant_id: UUID | str, fields: dict[str, Any], base, params: dict[str, Any],
                      samples: list[dict[str, str]], train_rows: int, validation_rows: int) -> str:
    hp = fields["hyperparameters"]
    metrics = fields["metrics"]
    kind = "LoRA adapter" + (" (merged into the base weights)" if fields["merged"] else "") if fields["method"] == "lora" \
        else "full fine-tune"
    lines = [
        f"# {fields['name']}",
        "",
        f"A {kind} of **{base.display_name}** (`{base.name}`, {base.architecture}, "
        f"{base.parameter_count:,} parameters) for **{fields['task']}**.",
        f"Trainable parameters: {fields['trainable_parameter_count']:,} of {fields['parameter_count']:,}.",
        "",
        "## Training data",
        f"- Training version `{params['train_version_id']}` ({train_rows} rows used for training), lineage:",
        *_lineage_lines(tenant_id, params["train_version_id"]),
    ]
    if params.get("validation_version_id"):
        lines += [f"- Validation version `{params['validation_version_id']}` ({validation_rows} rows), lineage:",
                  *_lineage_lines(tenant_id, params["validation_version_id"])]
    else:
        lines.append(f"- Validation: {validation_rows} rows held out of the training version "
                     f"(fraction {hp['validation_fraction']}, seed {hp['seed']}).")
    if fields.get("labels"):
        lines.append(f"- Labels: {', '.join(fields['labels'])}.")
    lines += ["", "## Hyperparameters", "", "| name | value |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in sorted(hp.items())]
    lines += ["", "## Evaluation", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in sorted(metrics.items()) if value is not None]
    lines += ["", "## Safety findings", *_data_findings(tenant_id, params["train_version_id"])]
    if samples:
        lines += ["", "## Held-out generations", ""]
        for sample in samples:
            lines += [f"- **Prompt:** {sample['prompt'][:300]}", f"  - reference: {sample['reference'][:300]}",
                      f"  - generated: {sample['generated'][:300]}"]
    lines += ["", "## Intended use and limits",
              "Fine-tuned on the tenant's own data for the task above; its outputs reflect that data, its gaps "
              "and its biases. Route prompts and outputs through the tenant's safety policy.", ""]
    return "\n".join(lines)
