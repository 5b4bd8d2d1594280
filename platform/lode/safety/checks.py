"""The one place texts are checked against a tenant's policy: the policy's detectors run over a
batch, each text's scores become an action, what needs recording is recorded (a decision naming
the policy version; a moderation item for what is flagged), and redactions are applied.

Callers: the generation hook (prompts and outputs), the check and moderation APIs, the dataset
cleaning operation and the fine-tune admission check."""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from .detectors.base import Finding, TextScores, detect_all
from .policies import Policy, policy_current

REDACT_TAG = "[{}]"
DECISIONS_DB = "system"


@dataclass
class CheckResult:
    action: str  # allow | flag | block | redact
    categories: list[str]  # the categories that reached their threshold
    scores: dict[str, float]
    findings: list[Finding]
    policy_version: int
    redacted: str | None = None  # the text with its redactable spans replaced (when it has any)
    item_id: str | None = None  # the moderation item a flag made
    held: bool = False
    decision_id: int | None = None

    @property
    def allowed(self) -> bool:
        return self.action != "block"


_detector_cache: dict[tuple, list] = {}
_cache_lock = threading.Lock()


def policy_detectors(tenant_id: UUID | str, policy: Policy, *, full: bool) -> list:
    """The detectors a policy version runs (built once per tenant, version and path)."""
    from .detectors import TenantRules, detectors_for

    platform_terms = _platform_terms()
    key = (str(tenant_id), policy.version, full, policy.semantic, (policy.classifier or {}).get("id"), platform_terms)
    with _cache_lock:
        found = _detector_cache.get(key)
    if found is not None:
        return found
    rules = TenantRules(
        terms=list(platform_terms) + [(category, value) for kind, category, value, _ in policy.blocklist if kind == "term"],
        patterns=[(category, value) for kind, category, value, _ in policy.blocklist if kind == "regex"],
        phrases=[(category, value, threshold) for kind, category, value, threshold in policy.blocklist if kind == "phrase"],
    )
    detectors = list(detectors_for(rules, full=full and policy.semantic))
    if policy.classifier:
        from .classifier import ClassifierDetector

        detectors.append(ClassifierDetector.for_model(policy.classifier))
    with _cache_lock:
        if len(_detector_cache) > 256:
            _detector_cache.clear()
        _detector_cache[key] = detectors
    return detectors


_platform_cache: dict[str, Any] = {"at": 0.0, "terms": ()}
PLATFORM_TERMS_TTL_SECONDS = 10.0


def _platform_terms() -> tuple[tuple[str, str], ...]:
    """The active lexicon terms staff added in the admin (re-read every few seconds)."""
    import time

    from .models import LexiconTerm

    now = time.monotonic()
    if now - _platform_cache["at"] > PLATFORM_TERMS_TTL_SECONDS:
        _platform_cache["terms"] = tuple(LexiconTerm.objects.filter(active=True).order_by("id")
                                         .values_list("category", "term"))
        _platform_cache["at"] = now
    return _platform_cache["terms"]


def _redacted(text: str, findings: list[Finding], policy: Policy) -> str | None:
    spans = sorted({(f.start, f.end, f.evidence if f.category == "pii" else f.category) for f in findings
                    if f.start is not None and f.end is not None
                    and policy.rules.get(f.category, {}).get("action") == "redact"
                    and f.score >= policy.rules[f.category]["threshold"]})
    if not spans:
        return None
    parts, position = [], 0
    for start, end, label in spans:
        if start < position:  # overlapping spans: the first wins
            continue
        parts.append(text[position:start])
        parts.append(REDACT_TAG.format(str(label).upper()))
        position = end
    parts.append(text[position:])
    return "".join(parts)


def texts_check(*, tenant_id: UUID | str, texts: list[str], source: str, full: bool = True, record: str = "all",
                source_ref: str = "", context: dict[str, Any] | None = None, hold: bool | None = None,
                policy: Policy | None = None, queue: bool = True) -> list[CheckResult]:
    """Checks texts under the tenant's current policy (or the one given). `record`: "all" writes a
    decision for every text, "flagged" only for those not allowed as they are, "none" nothing (and
    no moderation item). A flagged text becomes a moderation item, held when `hold` (default: the
    policy's choice for outputs; prompts and dataset rows are never held) unless `queue` is off
    (the check API: an inquiry, not content on its way anywhere)."""
    policy = policy or policy_current(tenant_id)
    scored: list[TextScores] = detect_all(policy_detectors(tenant_id, policy, full=full), texts)
    results = []
    for text, found in zip(texts, scored, strict=True):
        action, categories = policy.outcome(found.scores, source=source)
        result = CheckResult(action=action, categories=categories,
                             scores={name: round(float(score), 4) for name, score in found.scores.items() if score > 0},
                             findings=found.findings, policy_version=policy.version)
        if action in ("redact", "flag"):
            result.redacted = _redacted(text, found.findings, policy)
        results.append(result)
    if record != "none":
        _record(tenant_id, texts, results, source=source, source_ref=source_ref, context=context or {},
                policy=policy, hold=(policy.flagged_output == "hold") if hold is None else hold, only_flagged=record == "flagged",
                queue=queue)
    return results


def _record(tenant_id, texts, results, *, source, source_ref, context, policy: Policy, hold: bool, only_flagged: bool,
            queue: bool):
    from tenants.db_context import tenant_atomic

    from .models import ModerationItem, SafetyDecision

    now = timezone.now()
    due = now + timedelta(minutes=policy.review_sla_minutes)
    items, decisions = [], []
    with tenant_atomic(tenant_id):
        for index, (text, result) in enumerate(zip(texts, results)):
            if only_flagged and result.action == "allow":
                continue
            ref = source_ref if len(texts) == 1 else f"{source_ref}#{index}"
            item = None
            if result.action == "flag" and queue:
                item = ModerationItem(tenant_id=tenant_id, source=source, source_ref=ref[:200], content=text,
                                      context=context, scores=result.scores, categories=result.categories,
                                      policy_version=policy.version, held=hold and source == "output", due_at=due,
                                      created_at=now)
                items.append(item)
                result.item_id = str(item.id)
                result.held = item.held
            decisions.append(SafetyDecision(
                tenant_id=tenant_id, policy_version=policy.version, source=source, source_ref=ref[:200],
                action=result.action, categories=result.categories, scores=result.scores,
                text_sha256=hashlib.sha256(text.encode()).hexdigest(), item=item, created_at=now))
        if items:
            ModerationItem.objects.bulk_create(items)
            from .notify import items_flagged

            items_flagged(tenant_id, items)
        SafetyDecision.objects.bulk_create([decision for decision in decisions if decision.action != "block"])
    # A block is an audit record that must outlive the request: the refused request rolls back,
    # its decision stays. It goes through the platform's own connection.
    loose = [decision for decision in decisions if decision.action == "block"]
    if loose:
        with transaction.atomic(using=DECISIONS_DB):
            SafetyDecision.objects.using(DECISIONS_DB).bulk_create(loose)
    by_result = [result for result in results if not (only_flagged and result.action == "allow")]
    for result, decision in zip(by_result, decisions):
        result.decision_id = decision.id
