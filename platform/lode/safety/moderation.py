"""The moderation queue: claiming items (never two reviewers on one), deciding them (approve,
reject, escalate, with a reason), bulk decisions, platform staff's escalation queue across tenants,
and what a decision does: the audit trail, releasing or purging held content, the tenant's webhook,
and a labeled example for the tenant's own safety classifier."""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone

from lode.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from tenants.db_context import tenant_atomic
from tenants.services import actor_api_key, actor_user, audit_record

from .models import ModerationItem, ReviewDecision

CLAIM_MINUTES = int(os.environ.get("LODE_MODERATION_CLAIM_MINUTES", "15"))
MAX_CLAIM = 50
MAX_BULK = 500
MAX_REASON = 2000
VERDICTS = ("approve", "reject", "escalate")


def _reviewer(by: Any):
    """The person deciding: the signed-in user, or the member who created the API key in use."""
    return actor_user(by) or getattr(actor_api_key(by), "created_by", None)


def _claim_expired_before():
    return timezone.now() - timedelta(minutes=CLAIM_MINUTES)


def items_claim(*, tenant_id: UUID | str, by: Any, count: int = 1) -> list[ModerationItem]:
    """The next `count` items of the tenant's queue (the most overdue first) claimed for the
    reviewer: pending ones and those whose claim has lapsed. Two reviewers claiming at once get
    different items (rows locked with SKIP LOCKED)."""
    count = _count(count)
    reviewer = _reviewer(by)
    if reviewer is None:
        raise PermissionDenied("Claiming needs a reviewer: a signed-in member, or an API key a member created.")
    now = timezone.now()
    with tenant_atomic(tenant_id):
        ids = list(ModerationItem.objects.filter(
            state__in=(ModerationItem.State.PENDING, ModerationItem.State.CLAIMED))
            .exclude(state=ModerationItem.State.CLAIMED, claimed_at__gte=_claim_expired_before())
            .order_by("due_at", "created_at").select_for_update(skip_locked=True).values_list("id", flat=True)[:count])
        ModerationItem.objects.filter(id__in=ids).update(state=ModerationItem.State.CLAIMED, claimed_by=reviewer,
                                                         claimed_at=now)
        claimed = list(ModerationItem.objects.filter(id__in=ids).order_by("due_at", "created_at"))
        if claimed:
            audit_record(tenant_id=tenant_id, action="safety.items_claimed", user=reviewer, api_key=actor_api_key(by),
                         data={"items": [str(item.id) for item in claimed]})
    return claimed


def _count(count: Any) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CLAIM:
        raise ValidationFailed(f"count: a whole number from 1 to {MAX_CLAIM}", details={"field": "count"})
    return count


def _reason(verdict: str, reason: Any) -> str:
    if verdict not in VERDICTS:
        raise ValidationFailed(f"verdict: one of {', '.join(VERDICTS)}", details={"field": "verdict"})
    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ValidationFailed(f"reason: text of at most {MAX_REASON} characters", details={"field": "reason"})
    if verdict in ("reject", "escalate") and not reason.strip():
        raise ValidationFailed(f"reason: required to {verdict}", details={"field": "reason"})
    return reason.strip()


def _apply(item: ModerationItem, *, verdict: str, reason: str, reviewer, as_staff: bool) -> tuple[ModerationItem, str]:
    """Writes the decision on a locked, open item; returns it and the webhook event to send."""
    from lode.core import artifacts

    now = timezone.now()
    ReviewDecision.objects.create(
        tenant_id=item.tenant_id, item=item, verdict=verdict, reason=reason, reviewer=reviewer, as_staff=as_staff,
        text=item.content, categories=item.categories, seconds_open=(now - item.created_at).total_seconds())
    item.reason = reason
    if verdict == "escalate":
        item.state = ModerationItem.State.ESCALATED
        item.escalated_at = now
        item.escalation_reason = reason
        item.claimed_by = None
        item.claimed_at = None
        event = "safety.item_escalated"
    else:
        item.decided_by = reviewer
        item.decided_at = now
        if verdict == "approve":
            item.state = ModerationItem.State.APPROVED
            if item.held:
                item.released_at = now
            event = "safety.item_released" if item.held else "safety.item_approved"
        else:
            item.state = ModerationItem.State.REJECTED
            if item.held:
                item.content = ""  # the reviewer's record keeps the text as a labeled example
                item.purged_at = now
                if item.content_key:
                    transaction.on_commit(lambda key=item.content_key, tenant=item.tenant_id:
                                          artifacts.object_delete(tenant_id=tenant, key=key))
            event = "safety.item_purged" if item.held else "safety.item_rejected"
    item.save()
    return item, event


def item_decide(*, tenant_id: UUID | str, item_id: UUID | str, by: Any, verdict: str, reason: Any = "") -> ModerationItem:
    """A tenant reviewer's decision. The item must be open and not claimed by someone else (an
    unclaimed item is taken by the decision); an escalated item waits for platform staff."""
    from .notify import item_decided

    reason = _reason(verdict, reason)
    reviewer = _reviewer(by)
    if reviewer is None:  # e.g. an API key whose creator was deleted: nobody to hold to the claims
        raise PermissionDenied("Deciding needs a reviewer: a signed-in member, or an API key a member created.")
    with tenant_atomic(tenant_id):
        item = _locked(ModerationItem.objects, item_id)
        if item.state == ModerationItem.State.ESCALATED:
            raise Conflict("The item is escalated; platform staff decide it.", details={"state": item.state})
        _check_open_and_claim(item, reviewer)
        item, event = _apply(item, verdict=verdict, reason=reason, reviewer=reviewer, as_staff=False)
        audit_record(tenant_id=tenant_id, action=f"safety.item_{verdict}", user=reviewer, api_key=actor_api_key(by),
                     target=item, data={"reason": reason, "source": item.source, "held": item.held})
        item_decided(tenant_id, item, event)
    return item


def _locked(manager, item_id) -> ModerationItem:
    try:
        return manager.select_for_update().get(id=item_id)
    except (ModerationItem.DoesNotExist, ValueError, DjangoValidationError):
        raise NotFound("No such moderation item.") from None


def _check_open_and_claim(item: ModerationItem, reviewer) -> None:
    if not item.is_open:
        raise Conflict(f"The item is already {item.state}.", details={"state": item.state})
    # No reviewer counts as someone else: a live claim is never overridden by an anonymous decision.
    claimed_by_other = (item.claimed_by_id and (reviewer is None or item.claimed_by_id != reviewer.id)
                        and item.claimed_at and item.claimed_at >= _claim_expired_before())
    if claimed_by_other:
        raise Conflict("Another reviewer has claimed this item.", details={"state": item.state})


def items_bulk_decide(*, tenant_id: UUID | str, item_ids: Any, by: Any, verdict: str, reason: Any = "") -> dict[str, Any]:
    """The same decision on many items; those that cannot take it (decided, escalated, claimed by
    someone else, not found) are listed with why, the rest decided together."""
    reason = _reason(verdict, reason)
    if not isinstance(item_ids, list) or not item_ids or len(item_ids) > MAX_BULK:
        raise ValidationFailed(f"items: a list of 1 to {MAX_BULK} item ids", details={"field": "items"})
    decided, skipped = [], []
    for item_id in dict.fromkeys(str(value) for value in item_ids):
        try:
            item_decide(tenant_id=tenant_id, item_id=item_id, by=by, verdict=verdict, reason=reason)
            decided.append(item_id)
        except (NotFound, Conflict) as exc:
            skipped.append({"id": item_id, "why": exc.message})
    return {"decided": decided, "skipped": skipped}


# --- Platform staff: escalations across tenants ----------------------------------------------------


def _staff(user) -> None:
    if user is None or not getattr(user, "is_staff", False):
        raise PermissionDenied("Platform staff only.")


def escalations_list(*, user, limit: int = 100) -> list[ModerationItem]:
    from tenants.db_context import dangerously_all_tenants

    _staff(user)
    return list(dangerously_all_tenants(ModerationItem).filter(state=ModerationItem.State.ESCALATED)
                .select_related("tenant").order_by("due_at", "created_at")[:limit])


def escalation_claim(*, user, count: int = 1) -> list[ModerationItem]:
    """The next escalated items (any tenant) claimed for a staff member, with SKIP LOCKED."""
    from tenants.db_context import dangerously_all_tenants

    _staff(user)
    count = _count(count)
    items = dangerously_all_tenants(ModerationItem)
    alias = items.db
    with transaction.atomic(using=alias):
        ids = list(items.filter(state=ModerationItem.State.ESCALATED)
                   .exclude(claimed_by__isnull=False, claimed_at__gte=_claim_expired_before())
                   .order_by("due_at", "created_at").select_for_update(skip_locked=True).values_list("id", flat=True)[:count])
        items.filter(id__in=ids).update(claimed_by=user, claimed_at=timezone.now())
    return list(items.filter(id__in=ids).order_by("due_at", "created_at"))


def escalation_decide(*, user, item_id: UUID | str, verdict: str, reason: Any = "") -> ModerationItem:
    """Staff approve or reject an escalated item, in its tenant's context."""
    from tenants.db_context import dangerously_all_tenants

    from .notify import item_decided

    _staff(user)
    if verdict == "escalate":
        raise ValidationFailed("verdict: approve or reject (the item is already escalated)", details={"field": "verdict"})
    reason = _reason(verdict, reason)
    try:
        tenant_id = dangerously_all_tenants(ModerationItem).values_list("tenant_id", flat=True).get(id=item_id)
    except (ModerationItem.DoesNotExist, ValueError, DjangoValidationError):
        raise NotFound("No such moderation item.") from None
    with tenant_atomic(tenant_id):
        item = _locked(ModerationItem.objects, item_id)
        if item.state != ModerationItem.State.ESCALATED:
            raise Conflict(f"The item is {item.state}, not escalated.", details={"state": item.state})
        _check_open_and_claim(item, user)
        item, event = _apply(item, verdict=verdict, reason=reason, reviewer=user, as_staff=True)
        audit_record(tenant_id=tenant_id, action=f"safety.item_{verdict}_by_staff", user=user, target=item,
                     data={"reason": reason})
        item_decided(tenant_id, item, event)
    return item


def item_content(item: ModerationItem) -> dict[str, Any]:
    """What a reviewer sees of an item's content: the text, or for an image a short-lived URL."""
    from lode.core import artifacts

    if item.content_key and not item.purged_at:
        return {"text": item.content, "image_url": artifacts.presigned_get_url(tenant_id=item.tenant_id, key=item.content_key)}
    return {"text": item.content, "image_url": None}


