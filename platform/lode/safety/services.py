"""Writes of the safety capability that are not the queue's: a new policy version, and exporting
reviewers' decisions as a labeled dataset for the tenant's own safety classifier."""
from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import Max

from lode.core.errors import Conflict, ValidationFailed
from tenants.db_context import tenant_atomic
from tenants.services import actor_api_key, actor_user, audit_record

from .models import ReviewDecision, SafetyPolicy, Source
from .policies import blocklist_check, rules_check

SAFE, UNSAFE = "safe", "unsafe"
MIN_EXPORT_EXAMPLES = 4


def policy_create(*, tenant_id: UUID | str, by: Any, rules: Any = None, blocklist: Any = None, classifier: Any = None,
                  **settings_values: Any) -> SafetyPolicy:
    """The tenant's next policy version (the whole policy: categories not named keep the
    platform's defaults). The classifier, when named, must be the tenant's sequence-classification
    fine-tune with a "safe"/"unsafe" label pair."""
    clean_rules = rules_check(rules)
    clean_blocklist = blocklist_check(blocklist)
    with tenant_atomic(tenant_id):
        model = None
        if classifier:
            from lode.training.models import TunedModel

            model = TunedModel.objects.filter(name=classifier).first() if isinstance(classifier, str) else None
            if model is None:
                raise ValidationFailed(f"classifier: no fine-tuned model named {classifier!r}", details={"field": "classifier"})
            if model.task_type != "sequence_classification" or UNSAFE not in (model.labels or []):
                raise ValidationFailed("classifier: a sequence-classification fine-tune with an 'unsafe' label "
                                       "(train one on an export of your reviewers' decisions)", details={"field": "classifier"})
        version = (SafetyPolicy.objects.aggregate(top=Max("version"))["top"] or 0) + 1
        policy = SafetyPolicy(tenant_id=tenant_id, version=version, rules=clean_rules, blocklist=clean_blocklist,
                              classifier=model, created_by=actor_user(by), **settings_values)
        try:
            with transaction.atomic():
                policy.save()
        except IntegrityError:
            raise Conflict("Another change to the policy was saved at the same time; read it and try again.") from None
        audit_record(tenant_id=tenant_id, action="safety.policy_created", user=actor_user(by), api_key=actor_api_key(by),
                     target=policy, data={"version": version, "blocklist_entries": len(clean_blocklist),
                                          "classifier": classifier or None})
    return policy


def review_export(*, tenant_id: UUID | str, by: Any, name: str = ""):
    """Reviewers' decisions on texts (approve → "safe", reject → "unsafe"; escalations wait for
    staff's final word) as a new classification dataset, through the ordinary upload and ingest:
    train the tenant's safety classifier on it with a sequence-classification fine-tune. Image
    items are left out: their text is the prompt, and the verdict was on the picture."""
    import orjson
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone

    from lode.datasets import services as dataset_services

    with tenant_atomic(tenant_id):
        decisions = list(ReviewDecision.objects.filter(verdict__in=("approve", "reject")).exclude(text="")
                         .exclude(item__source=Source.IMAGE)
                         .order_by("item_id", "-created_at").values("item_id", "verdict", "text", "categories"))
    latest: dict[Any, dict] = {}
    for decision in decisions:
        latest.setdefault(decision["item_id"], decision)  # an item's last decision wins
    rows = [{"text": d["text"], "labels": [SAFE if d["verdict"] == "approve" else UNSAFE]} for d in latest.values()]
    labels = {row["labels"][0] for row in rows}
    if len(rows) < MIN_EXPORT_EXAMPLES or labels != {SAFE, UNSAFE}:
        raise ValidationFailed(f"reviews: at least {MIN_EXPORT_EXAMPLES} decided items, both approved and rejected ones, "
                               f"are needed (have {len(rows)}: {', '.join(sorted(labels)) or 'none'})",
                               details={"field": "reviews"})
    name = (name or "").strip() or f"safety-reviews-{timezone.now():%Y%m%d-%H%M%S}"
    data = b"".join(orjson.dumps(row) + b"\n" for row in rows)
    with tenant_atomic(tenant_id):
        dataset = dataset_services.dataset_create(tenant_id=tenant_id, name=name, modality="classification",
                                                  description="Moderation reviewers' decisions (safe/unsafe).", by=by)
        _upload, version = dataset_services.upload_direct(
            tenant_id=tenant_id, dataset_id=dataset.id, file=SimpleUploadedFile("reviews.jsonl", data), by=by)
        audit_record(tenant_id=tenant_id, action="safety.reviews_exported", user=actor_user(by), api_key=actor_api_key(by),
                     target=version, data={"rows": len(rows), "dataset": name})
    return version


