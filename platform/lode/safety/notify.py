"""What the safety capability tells tenants, through the platform's signed webhooks."""
from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

EVENTS = {
    "safety.item_flagged": "A prompt, output, dataset row or image was flagged and waits for review.",
    "safety.item_escalated": "A reviewer escalated an item to platform staff.",
    "safety.item_released": "A held item was approved; the event carries its content.",
    "safety.item_purged": "A held item was rejected; its content is deleted.",
    "safety.item_approved": "An item (not held) was approved.",
    "safety.item_rejected": "An item (not held) was rejected.",
}


def events_register() -> None:
    from lode.core.webhooks.registry import webhook_event_register

    for name, description in EVENTS.items():
        webhook_event_register(name, description)


def _item_data(item, *, content: bool = False) -> dict:
    data = {"id": str(item.id), "source": item.source, "source_ref": item.source_ref, "state": item.state,
            "categories": item.categories, "scores": item.scores, "policy_version": item.policy_version,
            "held": item.held, "due_at": item.due_at.isoformat() if item.due_at else None}
    if content:
        data["content"] = item.content
        data["reason"] = item.reason
    return data


def items_flagged(tenant_id: UUID | str, items: Iterable) -> None:
    """Inside the caller's transaction: the webhook deliveries are written with the items and
    sent once it commits."""
    from lode.core.webhooks.services import webhook_emit

    for item in items:
        webhook_emit(tenant_id=tenant_id, event_type="safety.item_flagged", data=_item_data(item))


def item_decided(tenant_id: UUID | str, item, event_type: str) -> None:
    from lode.core.webhooks.services import webhook_emit

    webhook_emit(tenant_id=tenant_id, event_type=event_type,
                 data=_item_data(item, content=event_type == "safety.item_released"))
