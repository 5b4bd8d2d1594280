"""Reads of the safety capability for the dashboard: the moderation queue (counts, a page of items,
one item with its content and history), platform staff's escalations, and the policy in force with
its versions. Everything comes back as plain values (dicts), loaded whole inside the tenant's
context: a page renders after the request's transaction has ended, where a lazy query sees nothing."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db.models import Case, Count, IntegerField, Q, Value, When
from django.utils import timezone

from lode.core.errors import NotFound
from tenants.db_context import tenant_atomic

from .detectors.base import CATEGORIES
from .models import ModerationItem, ReviewDecision, SafetyPolicy, Source
from .moderation import CLAIM_MINUTES, escalations_list, item_content
from .policies import ACTIONS, policy_current

OPEN_STATES = (ModerationItem.State.PENDING, ModerationItem.State.CLAIMED)
# The queue's state filter: "open" (pending or claimed, what a tenant reviewer can take), each
# state, or everything.
STATE_FILTERS: tuple[tuple[str, str], ...] = (
    ("open", "Open (pending or claimed)"),
    *((value, label) for value, label in ModerationItem.State.choices),
    ("all", "All"),
)
SOURCE_CHOICES: tuple[tuple[str, str], ...] = tuple(Source.choices)
POLICY_CHOICES: dict[str, tuple[tuple[str, str], ...]] = {
    "flagged_output": tuple(SafetyPolicy.FlaggedOutput.choices),
    "stream_release": tuple(SafetyPolicy.StreamRelease.choices),
    "image_review": tuple(SafetyPolicy.ImageReview.choices),
    "action": tuple((action, action) for action in ACTIONS),
}
PREVIEW_CHARS = 160


def sla_label(seconds: float) -> str:
    """Time left before an item's review is due ("3h 05m 10s left"), or how long it is overdue."""
    whole = int(abs(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d {hours}h"
    elif hours:
        text = f"{hours}h {minutes:02d}m {secs:02d}s"
    elif minutes:
        text = f"{minutes}m {secs:02d}s"
    else:
        text = f"{secs}s"
    return f"{text} left" if seconds >= 0 else f"overdue {text}"


def _email(user) -> str:
    return user.email if user is not None else ""


def _scores(scores: Any, categories: list[str]) -> list[dict[str, Any]]:
    if not isinstance(scores, dict):
        return []
    rows = [{"category": name, "score": float(value), "hit": name in categories}
            for name, value in scores.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return sorted(rows, key=lambda row: (-row["score"], row["category"]))


def _item_row(item: ModerationItem, *, now: datetime) -> dict[str, Any]:
    categories = [c for c in item.categories if isinstance(c, str)] if isinstance(item.categories, list) else []
    is_open = item.is_open
    seconds_left = (item.due_at - now).total_seconds()
    claim_live = bool(item.claimed_by_id and item.claimed_at
                      and item.claimed_at >= now - timedelta(minutes=CLAIM_MINUTES))
    if item.content_key and not item.content:
        preview = "[image]"
    elif item.purged_at and not item.content:
        preview = "[purged]"
    else:
        preview = item.content[:PREVIEW_CHARS] + ("…" if len(item.content) > PREVIEW_CHARS else "")
    return {
        "id": str(item.id),
        "tenant_id": str(item.tenant_id),
        "source": item.source,
        "source_label": item.get_source_display(),
        "source_ref": item.source_ref,
        "state": item.state,
        "state_label": item.get_state_display(),
        "is_open": is_open,
        "is_image": bool(item.content_key),
        "preview": preview,
        "categories": categories,
        "scores": _scores(item.scores, categories),
        "policy_version": item.policy_version,
        "held": item.held,
        "claimed_by": _email(item.claimed_by),
        "claimed_by_id": item.claimed_by_id,
        "claimed_at": item.claimed_at,
        "claim_live": claim_live,
        "escalated_at": item.escalated_at,
        "escalation_reason": item.escalation_reason,
        "decided_by": _email(item.decided_by),
        "decided_at": item.decided_at,
        "reason": item.reason,
        "released_at": item.released_at,
        "purged_at": item.purged_at,
        "due_at": item.due_at,
        "due_at_iso": item.due_at.isoformat(timespec="milliseconds"),
        "sla_seconds_left": seconds_left if is_open else None,
        "sla_label": sla_label(seconds_left) if is_open else "",
        "is_overdue": is_open and seconds_left < 0,
        "created_at": item.created_at,
    }


def _context_rows(context: Any) -> list[dict[str, str]]:
    """An item's context (the prompt of an output, the model, the template…) as name/value rows;
    values that are not text shown as JSON."""
    if not isinstance(context, dict):
        return []
    rows = []
    for key in sorted(context):
        value = context[key]
        if not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False, default=str)
        rows.append({"name": str(key), "value": value})
    return rows


def queue_counts(*, tenant_id: UUID | str) -> dict[str, int]:
    """The tenant's items by state, the open ones (pending or claimed) and the overdue open ones,
    in one query."""
    now = timezone.now()
    states = ModerationItem.State
    with tenant_atomic(tenant_id):
        counts = ModerationItem.objects.aggregate(
            **{state.value: Count("id", filter=Q(state=state.value)) for state in states},
            open=Count("id", filter=Q(state__in=OPEN_STATES)),
            overdue=Count("id", filter=Q(state__in=OPEN_STATES, due_at__lt=now)),
        )
    return {name: int(value or 0) for name, value in counts.items()}


def queue_open_count(*, tenant_id: UUID | str) -> int:
    """How many items wait for a tenant reviewer (pending or claimed): the navigation's badge."""
    with tenant_atomic(tenant_id):
        return ModerationItem.objects.filter(state__in=OPEN_STATES).count()


def queue_page(*, tenant_id: UUID | str, state: str = "open", source: str | None = None, limit: int = 100,
               recent_reviewer_id: Any = None, recent_minutes: int = 30) -> list[dict[str, Any]]:
    """A page of the tenant's queue. Open and escalated items come most overdue first, decided
    ones most recently decided first. With `recent_reviewer_id`, the open view keeps the items
    that reviewer decided in the last `recent_minutes` in their place (so a decision shows as a
    changed state rather than a vanished row)."""
    now = timezone.now()
    items = ModerationItem.objects.select_related("claimed_by", "decided_by")
    if source:
        items = items.filter(source=source)
    with tenant_atomic(tenant_id):
        if state == "open":
            rows = list(items.filter(state__in=OPEN_STATES).order_by("due_at", "created_at")[:limit])
            if recent_reviewer_id is not None:
                since = now - timedelta(minutes=recent_minutes)
                recent_ids = (ReviewDecision.objects.filter(reviewer_id=recent_reviewer_id, created_at__gte=since)
                              .order_by("-created_at").values_list("item_id", flat=True)[:limit])
                seen = {row.id for row in rows}
                rows += [row for row in items.filter(id__in=list(recent_ids)).exclude(state__in=OPEN_STATES)
                         if row.id not in seen]
                rows.sort(key=lambda row: (row.due_at, row.created_at))
        elif state in (ModerationItem.State.APPROVED, ModerationItem.State.REJECTED):
            rows = list(items.filter(state=state).order_by("-decided_at", "-created_at")[:limit])
        elif state in ModerationItem.State.values:
            rows = list(items.filter(state=state).order_by("due_at", "created_at")[:limit])
        else:  # all: what is still open first (most overdue first), then the decided ones
            open_first = Case(When(state__in=(*OPEN_STATES, ModerationItem.State.ESCALATED), then=Value(0)),
                              default=Value(1), output_field=IntegerField())
            rows = list(items.annotate(open_first=open_first).order_by("open_first", "due_at", "created_at")[:limit])
    return [_item_row(row, now=now) for row in rows]


def claimed_by_reviewer(*, tenant_id: UUID | str, reviewer_id: Any) -> list[str]:
    """The ids of the items the reviewer holds claimed, most overdue first: what opens next."""
    with tenant_atomic(tenant_id):
        return [str(item_id) for item_id in ModerationItem.objects.filter(
            state=ModerationItem.State.CLAIMED, claimed_by_id=reviewer_id).order_by("due_at", "created_at")
            .values_list("id", flat=True)]


def item_get(*, tenant_id: UUID | str, item_id: UUID | str) -> dict[str, Any]:
    """One item of the tenant's queue with its content (an image as a short-lived URL), context,
    scores and review history. Another tenant's item and a missing one are the same NotFound."""
    with tenant_atomic(tenant_id):
        try:
            item = (ModerationItem.objects.select_related("claimed_by", "decided_by")
                    .get(tenant_id=tenant_id, id=item_id))
        except (ModerationItem.DoesNotExist, ValueError, ValidationError):
            raise NotFound("No such moderation item.") from None
        reviews = list(ReviewDecision.objects.filter(item_id=item.id).select_related("reviewer")
                       .order_by("created_at", "id"))
    row = _item_row(item, now=timezone.now())
    row.update(
        content=item_content(item),
        context=_context_rows(item.context),
        reviews=[{"verdict": review.verdict, "verdict_label": review.get_verdict_display(), "reason": review.reason,
                  "reviewer": _email(review.reviewer), "as_staff": review.as_staff,
                  "seconds_open": review.seconds_open, "created_at": review.created_at} for review in reviews],
    )
    return row


def escalation_list(*, user, limit: int = 100) -> list[dict[str, Any]]:
    """Every tenant's escalated items for platform staff (moderation.escalations_list refuses
    anyone else), with the tenant's name and the content to decide on."""
    now = timezone.now()
    rows = []
    for item in escalations_list(user=user, limit=limit):
        row = _item_row(item, now=now)
        row.update(tenant_name=item.tenant.name, content=item_content(item), context=_context_rows(item.context))
        rows.append(row)
    return rows


# --- Policies -----------------------------------------------------------------------------------------


def _blocklist_rows(entries) -> list[dict[str, Any]]:
    rows = []
    for entry in entries:
        if isinstance(entry, dict):
            rows.append({"kind": entry.get("kind"), "category": entry.get("category") or "blocklist",
                         "value": entry.get("value"), "threshold": entry.get("threshold")})
        else:  # the Policy dataclass's (kind, category, value, threshold)
            kind, category, value, threshold = entry
            rows.append({"kind": kind, "category": category, "value": value, "threshold": threshold})
    return rows


def policy_in_force(*, tenant_id: UUID | str) -> dict[str, Any]:
    """The policy the tenant's checks use now (its newest version, or the platform's default,
    version 0) as plain values: the rules of every category, the blocklist, the settings, and who
    wrote it when."""
    policy = policy_current(tenant_id)
    row = None
    if policy.version:
        with tenant_atomic(tenant_id):
            row = SafetyPolicy.objects.select_related("created_by").filter(version=policy.version).first()
    rules = [{"category": category, "threshold": float(policy.rules[category]["threshold"]),
              "action": policy.rules[category]["action"]}
             for category in CATEGORIES if category in policy.rules]
    return {
        "version": policy.version,
        "is_default": policy.version == 0,
        "rules": rules,
        "blocklist": _blocklist_rows(policy.blocklist),
        "flagged_output": policy.flagged_output,
        "stream_release": policy.stream_release,
        "image_review": policy.image_review,
        "image_sample_rate": policy.image_sample_rate,
        "training_flagged_rate_limit": policy.training_flagged_rate_limit,
        "semantic": policy.semantic,
        "classifier": (policy.classifier or {}).get("name") or "",
        "review_sla_minutes": policy.review_sla_minutes,
        "note": row.note if row is not None else "",
        "created_at": row.created_at if row is not None else None,
        "created_by": _email(row.created_by) if row is not None else "",
    }


def policy_versions(*, tenant_id: UUID | str, limit: int = 20) -> list[dict[str, Any]]:
    """The tenant's policy versions, newest first."""
    with tenant_atomic(tenant_id):
        rows = list(SafetyPolicy.objects.select_related("created_by").order_by("-version")[:limit])
    return [{"version": row.version, "created_at": row.created_at, "created_by": _email(row.created_by),
             "note": row.note, "blocklist_entries": len(row.blocklist or [])} for row in rows]
