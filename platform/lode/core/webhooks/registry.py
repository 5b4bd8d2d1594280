"""The catalogue of event types tenants can subscribe to. Apps declare theirs in
`AppConfig.ready()`; an endpoint may only subscribe to declared types (or "*")."""
from __future__ import annotations

import re
from dataclasses import dataclass

ALL_EVENTS = "*"
TEST_EVENT = "webhook.test"

_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


@dataclass(frozen=True)
class WebhookEventType:
    name: str
    description: str


_registry: dict[str, WebhookEventType] = {}


def webhook_event_register(name: str, description: str) -> WebhookEventType:
    """Declares an event type, e.g. `webhook_event_register("safety.item_flagged", "…")`.
    Registering the same name again with the same description is a no-op."""
    if not _NAME.match(name) or len(name) > 100:
        raise ValueError(f"webhook event type {name!r} must look like 'area.something_happened' (at most 100 chars)")
    event_type = WebhookEventType(name=name, description=description)
    existing = _registry.get(name)
    if existing is not None and existing != event_type:
        raise ValueError(f"webhook event type {name!r} is registered already with another description")
    _registry[name] = event_type
    return event_type


def webhook_event_is_known(name: str) -> bool:
    return name in _registry


def webhook_event_list() -> list[WebhookEventType]:
    return sorted(_registry.values(), key=lambda event_type: event_type.name)


webhook_event_register(TEST_EVENT, "Sent on request (POST /api/v1/webhooks/<id>/test) to check an endpoint.")
