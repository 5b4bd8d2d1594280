"""Policies: the platform's default, a tenant's versions, checking a new version, and turning a
text's category scores into an action.

For each category a threshold and an action (allow, flag, block, redact). A text's action is the
strictest one among the categories whose score reaches their threshold: block > flag > redact >
allow (a text with PII to redact and an insult to flag is flagged, and redacted when released)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from lode.core.errors import ValidationFailed

from .detectors.base import CATEGORIES

ACTIONS = ("allow", "flag", "block", "redact")
STRICTNESS = {"allow": 0, "redact": 1, "flag": 2, "block": 3}
MAX_BLOCKLIST = 5000
MAX_ENTRY_CHARS = 500

# The platform's default policy (version 0): abuse flagged, contraband and extremism blocked,
# personal data redacted, injection attempts blocked on prompts. Thresholds are the detectors'
# (detectors.DEFAULT_THRESHOLDS, where the evaluation set measures precision and recall).
DEFAULT_ACTIONS: dict[str, str] = {
    "toxicity": "flag", "abuse": "flag", "sexual": "flag", "violence": "flag", "self_harm": "flag",
    "illegal_goods": "block", "extremism": "block", "pii": "redact", "prompt_injection": "block",
    "blocklist": "block", "classifier": "flag",
}


def _default_rules() -> dict[str, dict[str, Any]]:
    from .detectors import DEFAULT_THRESHOLDS

    return {name: {"threshold": DEFAULT_THRESHOLDS[name], "action": action} for name, action in DEFAULT_ACTIONS.items()}


@dataclass(frozen=True)
class Policy:
    """A policy version as the checks use it (a row, or the default)."""

    version: int
    rules: dict[str, dict[str, Any]]
    blocklist: tuple[tuple[str, str, str, float | None], ...] = ()  # (kind, category, value, threshold)
    flagged_output: str = "hold"
    stream_release: str = "end"
    image_review: str = "when_prompt_flagged"
    image_sample_rate: float = 0.0
    training_flagged_rate_limit: float = 0.05
    semantic: bool = True
    classifier: dict[str, Any] | None = None  # {"id", "name", "labels"} of the tenant's classifier
    review_sla_minutes: int = 240
    extra: dict[str, Any] = field(default_factory=dict)

    def outcome(self, scores: dict[str, float], *, source: str) -> tuple[str, list[str]]:
        """(action, categories that reached their threshold). Injection rules apply to prompts
        only: a model's output quoting an attack is not one."""
        action, hit = "allow", []
        for category, score in scores.items():
            rule = self.rules.get(category)
            if rule is None or score < rule["threshold"]:
                continue
            if category == "prompt_injection" and source not in ("prompt", "check"):
                continue
            hit.append(category)
            if STRICTNESS[rule["action"]] > STRICTNESS[action]:
                action = rule["action"]
        return action, sorted(hit)


def default_policy() -> Policy:
    return Policy(version=0, rules=_default_rules())


def policy_from_row(row) -> Policy:
    classifier = None
    if row.classifier_id:
        model = row.classifier
        classifier = {"id": str(model.id), "name": model.name, "labels": list(model.labels or []),
                      "prefix": model.artifact_prefix, "manifest": model.manifest,
                      "base": {"prefix": model.base_model.artifact_prefix, "manifest": model.base_model.manifest,
                               "name": model.base_model.name, "tenant_id": str(model.base_model.tenant_id or "") or None},
                      "is_adapter": model.is_adapter, "tenant_id": str(row.tenant_id)}
    return Policy(
        version=row.version, rules=row.rules,
        blocklist=tuple((e["kind"], e["category"], e["value"], e.get("threshold")) for e in row.blocklist),
        flagged_output=row.flagged_output, stream_release=row.stream_release, image_review=row.image_review, image_sample_rate=row.image_sample_rate,
        training_flagged_rate_limit=row.training_flagged_rate_limit, semantic=row.semantic, classifier=classifier,
        review_sla_minutes=row.review_sla_minutes,
    )


def policy_current(tenant_id: UUID | str) -> Policy:
    """The tenant's newest policy version, or the platform default."""
    from tenants.db_context import tenant_atomic

    from .models import SafetyPolicy

    with tenant_atomic(tenant_id):
        row = (SafetyPolicy.objects.select_related("classifier", "classifier__base_model")
               .order_by("-version").first())
        return policy_from_row(row) if row else default_policy()


def _invalid(field_name: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field_name}: {message}", details={"field": field_name})


def rules_check(rules: Any) -> dict[str, dict[str, Any]]:
    """A policy's rules over the defaults: each category named must be one of Lode's, with a
    threshold in [0, 1] and an action."""
    if rules is None:
        rules = {}
    if not isinstance(rules, dict):
        raise _invalid("rules", "an object of category to {threshold, action}")
    clean = _default_rules()
    for category, rule in rules.items():
        where = f"rules.{category}"
        if category not in CATEGORIES:
            raise _invalid(where, f"not a category; one of {', '.join(CATEGORIES)}")
        if not isinstance(rule, dict) or set(rule) - {"threshold", "action"}:
            raise _invalid(where, "an object with threshold and action")
        merged = {**clean[category], **rule}
        threshold = merged["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise _invalid(f"{where}.threshold", "a number from 0 to 1")
        if merged["action"] not in ACTIONS:
            raise _invalid(f"{where}.action", f"one of {', '.join(ACTIONS)}")
        if merged["action"] == "redact" and category not in ("pii", "blocklist"):
            raise _invalid(f"{where}.action", "redact applies to pii and blocklist (the detectors that mark spans)")
        clean[category] = {"threshold": float(threshold), "action": merged["action"]}
    return clean


def blocklist_check(entries: Any) -> list[dict[str, Any]]:
    from .detectors.blocklist import blocklist_regex_check

    if entries is None:
        return []
    if not isinstance(entries, list):
        raise _invalid("blocklist", "a list of {kind: term|regex|phrase, category, value, threshold?}")
    if len(entries) > MAX_BLOCKLIST:
        raise _invalid("blocklist", f"at most {MAX_BLOCKLIST} entries")
    clean = []
    for index, entry in enumerate(entries):
        where = f"blocklist[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"kind", "category", "value", "threshold"}:
            raise _invalid(where, "an object with kind, category, value and (for phrases) threshold")
        kind = entry.get("kind")
        if kind not in ("term", "regex", "phrase"):
            raise _invalid(f"{where}.kind", "term, regex or phrase")
        category = entry.get("category") or "blocklist"
        if category not in CATEGORIES:
            raise _invalid(f"{where}.category", f"one of {', '.join(CATEGORIES)}")
        value = entry.get("value")
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_ENTRY_CHARS:
            raise _invalid(f"{where}.value", f"text of 1 to {MAX_ENTRY_CHARS} characters")
        if kind == "regex":
            problem = blocklist_regex_check(value)
            if problem:
                raise _invalid(f"{where}.value", problem)
        threshold = entry.get("threshold")
        if kind == "phrase":
            threshold = 0.75 if threshold is None else threshold
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
                raise _invalid(f"{where}.threshold", "a similarity above 0 and at most 1")
        elif threshold is not None:
            raise _invalid(f"{where}.threshold", "only phrases have a threshold")
        clean.append({"kind": kind, "category": category, "value": value.strip(),
                      **({"threshold": float(threshold)} if kind == "phrase" else {})})
    return clean
