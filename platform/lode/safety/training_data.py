"""The fine-tune admission check: the first rows (up to 2,000) of the training and validation data through the
tenant's policy, fast path; a job whose data is flagged or blocked more often than the policy's
`training_flagged_rate_limit` allows is refused with a report (rates, categories, example rows).
Registered in lode.training.services.ADMISSION_CHECKS."""
from __future__ import annotations

from typing import Any
from uuid import UUID

from lode.core.errors import ValidationFailed

SAMPLE_ROWS = 2000
MAX_EXAMPLES = 10


def training_data_check(*, tenant_id: UUID | str, task: str, versions: list) -> None:
    """Captions of text-to-image data are checked like any text; images are not (no offline image
    classifier)."""
    from lode.datasets.schemas import modality_get, row_texts
    from lode.datasets.shards import shard_tables

    from .checks import texts_check
    from .policies import policy_current

    policy = policy_current(tenant_id)
    for field_name, version in zip(("train_version", "validation_version"), versions):
        modality = modality_get(version.modality)
        rows: list[dict] = []
        for table in shard_tables(tenant_id=tenant_id, prefix=version.prefix, shard_count=version.shard_count):
            rows.extend(table.slice(0, SAMPLE_ROWS - len(rows)).to_pylist())
            if len(rows) >= SAMPLE_ROWS:
                break
        if not rows:
            continue
        texts = ["\n".join(row_texts(modality, row)) for row in rows]
        results = texts_check(tenant_id=tenant_id, texts=texts, source="training_data", full=False, record="none",
                              policy=policy)
        flagged = [(number, result) for number, result in enumerate(results, start=1) if result.action in ("flag", "block")]
        rate = len(flagged) / len(rows)
        if rate <= policy.training_flagged_rate_limit:
            continue
        categories: dict[str, int] = {}
        for _, result in flagged:
            for category in result.categories:
                categories[category] = categories.get(category, 0) + 1
        report: dict[str, Any] = {
            "version": str(version.id), "rows_checked": len(rows), "rows_flagged": len(flagged), "flagged_rate": round(rate, 4),
            "limit": policy.training_flagged_rate_limit, "policy_version": policy.version, "categories": categories,
            "examples": [{"row": number, "action": result.action, "categories": result.categories}
                         for number, result in flagged[:MAX_EXAMPLES]],
        }
        _record(tenant_id, version, report)
        raise ValidationFailed(
            f"{field_name}: {rate:.1%} of the {len(rows)} rows checked are flagged by the safety policy "
            f"(v{policy.version}); the limit is {policy.training_flagged_rate_limit:.1%}. Clean it with the "
            "safety_filter operation or change the policy.", details={"field": field_name, "safety_report": report})


def _record(tenant_id, version, report: dict[str, Any]) -> None:
    """On the platform's own connection: the refused request rolls back, the decision stays."""
    from django.db import transaction

    from .checks import DECISIONS_DB
    from .models import SafetyDecision

    with transaction.atomic(using=DECISIONS_DB):
        SafetyDecision.objects.using(DECISIONS_DB).create(tenant_id=tenant_id, policy_version=report["policy_version"], source="training_data",
                                      source_ref=f"version:{version.id}", action="block",
                                      categories=sorted(report["categories"]),
                                      scores={"flagged_rate": report["flagged_rate"], "limit": report["limit"]})
