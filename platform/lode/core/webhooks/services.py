"""Writes of webhooks: endpoints (create, change, rotate, delete, test), events (emit) and
delivery attempts. Every send happens after a commit, through the `lode.core.webhooks.deliver`
Celery task, which comes back here (webhook_delivery_attempt)."""
from __future__ import annotations

import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from lode.core.errors import Conflict, NotFound, ValidationFailed
from tenants.db_context import dangerously_all_tenants, tenant_atomic
from tenants.services import actor_api_key, actor_user, audit_record

from .egress import webhook_post, webhook_url_check
from .models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from .registry import ALL_EVENTS, TEST_EVENT, webhook_event_is_known, webhook_event_register  # noqa: F401 (re-exported)
from .signing import DELIVERY_ID_HEADER, EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, webhook_signature_header

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_DESCRIPTION_LENGTH = 300
# A message that arrives this early (clock skew, a duplicate) still counts as on time.
EARLY_TOLERANCE = timedelta(seconds=1)


@dataclass(frozen=True)
class WebhookEndpointWithSecret:
    endpoint: WebhookEndpoint
    secret: str  # shown to the caller once, at creation or rotation


def _secret_new() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _event_types_checked(events: Any) -> list[str]:
    if not isinstance(events, list) or not all(isinstance(name, str) for name in events):
        raise ValidationFailed("events: a list of event type names (or [\"*\"] for all)", details={"field": "events"})
    if not events:
        raise ValidationFailed("events: choose at least one event type, or \"*\" for all", details={"field": "events"})
    unknown = sorted({name for name in events if name != ALL_EVENTS and not webhook_event_is_known(name)})
    if unknown:
        raise ValidationFailed(f"events: unknown event type {unknown[0]!r} (GET /api/v1/webhooks/event-types lists them)",
                               details={"field": "events", "unknown": unknown})
    if ALL_EVENTS in events:
        return [ALL_EVENTS]
    return sorted(set(events))


def _description_checked(description: Any) -> str:
    if not isinstance(description, str):
        raise ValidationFailed("description: must be a string", details={"field": "description"})
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise ValidationFailed(f"description: at most {MAX_DESCRIPTION_LENGTH} characters", details={"field": "description"})
    return description.strip()


def _active_checked(is_active: Any) -> bool:
    if not isinstance(is_active, bool):
        raise ValidationFailed("active: must be true or false", details={"field": "active"})
    return is_active


def _endpoint_locked(tenant_id: UUID | str, endpoint_id: UUID | str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.select_for_update().filter(tenant_id=tenant_id, id=endpoint_id).first()
    if endpoint is None:
        raise NotFound("Webhook endpoint not found.")
    return endpoint


def _audit(tenant_id: UUID | str, action: str, by: Any, endpoint: WebhookEndpoint, data: dict | None = None) -> None:
    audit_record(tenant_id=tenant_id, action=f"webhook_endpoint.{action}", user=actor_user(by),
                 api_key=actor_api_key(by), target=endpoint, data={"url": endpoint.url, **(data or {})})


# --- Endpoints ------------------------------------------------------------------------------------


def webhook_endpoint_create(
    *, tenant_id: UUID | str, by: Any, url: Any, events: Any, description: Any = "", is_active: Any = True
) -> WebhookEndpointWithSecret:
    clean_url = webhook_url_check(url)
    event_types = _event_types_checked(events)
    clean_description = _description_checked(description)
    active = _active_checked(is_active)
    secret = _secret_new()
    with tenant_atomic(tenant_id):
        endpoint = WebhookEndpoint(
            tenant_id=tenant_id, url=clean_url, description=clean_description, event_types=event_types, secret=secret,
            is_active=active, created_by=actor_user(by),
        )
        endpoint.full_clean(exclude=["tenant", "created_by"])
        endpoint.save()
        _audit(tenant_id, "created", by, endpoint, {"events": event_types, "active": active})
    return WebhookEndpointWithSecret(endpoint=endpoint, secret=secret)


def webhook_endpoint_update(*, tenant_id: UUID | str, by: Any, endpoint_id: UUID | str, changes: dict[str, Any]) -> WebhookEndpoint:
    """Changes url, events, description and/or active (`is_active`); nothing else can change."""
    allowed = {"url", "events", "description", "is_active"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValidationFailed(f"{unknown[0]}: not a field that can be changed (url, events, description, active)",
                               details={"field": unknown[0]})
    values: dict[str, Any] = {}
    if "url" in changes:
        values["url"] = webhook_url_check(changes["url"])
    if "events" in changes:
        values["event_types"] = _event_types_checked(changes["events"])
    if "description" in changes:
        values["description"] = _description_checked(changes["description"])
    if "is_active" in changes:
        values["is_active"] = _active_checked(changes["is_active"])
    with tenant_atomic(tenant_id):
        endpoint = _endpoint_locked(tenant_id, endpoint_id)
        changed = {name: value for name, value in values.items() if getattr(endpoint, name) != value}
        if not changed:
            return endpoint
        for name, value in changed.items():
            setattr(endpoint, name, value)
        endpoint.updated_at = timezone.now()
        endpoint.full_clean(exclude=["tenant", "created_by"])
        endpoint.save(update_fields=[*sorted(changed), "updated_at"])
        _audit(tenant_id, "updated", by, endpoint, {"changed": sorted(changed)})
    return endpoint


def webhook_endpoint_delete(*, tenant_id: UUID | str, by: Any, endpoint_id: UUID | str) -> None:
    """Deletes the endpoint and its deliveries; messages still queued for them find nothing."""
    with tenant_atomic(tenant_id):
        endpoint = _endpoint_locked(tenant_id, endpoint_id)
        _audit(tenant_id, "deleted", by, endpoint)
        endpoint.delete()


def webhook_endpoint_secret_rotate(
    *, tenant_id: UUID | str, by: Any, endpoint_id: UUID | str, previous_valid_seconds: Any = None
) -> WebhookEndpointWithSecret:
    """A new secret; the old one keeps signing (as a second v1) for `previous_valid_seconds`
    (WEBHOOK_PREVIOUS_SECRET_TTL_SECONDS by default; 0 ends it at once, as after a leak)."""
    limit = 7 * 24 * 3600
    if previous_valid_seconds is None:
        previous_valid_seconds = settings.WEBHOOK_PREVIOUS_SECRET_TTL_SECONDS
    if isinstance(previous_valid_seconds, bool) or not isinstance(previous_valid_seconds, int) or not (
        0 <= previous_valid_seconds <= limit
    ):
        raise ValidationFailed(f"previous_secret_valid_seconds: a whole number of seconds from 0 to {limit}",
                               details={"field": "previous_secret_valid_seconds"})
    now = timezone.now()
    secret = _secret_new()
    with tenant_atomic(tenant_id):
        endpoint = _endpoint_locked(tenant_id, endpoint_id)
        endpoint.previous_secret = endpoint.secret if previous_valid_seconds else ""
        endpoint.previous_secret_expires_at = now + timedelta(seconds=previous_valid_seconds) if previous_valid_seconds else None
        endpoint.secret = secret
        endpoint.updated_at = now
        endpoint.save(update_fields=["secret_sealed", "previous_secret_sealed", "previous_secret_expires_at", "updated_at"])
        _audit(tenant_id, "secret_rotated", by, endpoint, {"previous_secret_valid_seconds": previous_valid_seconds})
    return WebhookEndpointWithSecret(endpoint=endpoint, secret=secret)


def webhook_endpoint_test(*, tenant_id: UUID | str, by: Any, endpoint_id: UUID | str) -> WebhookDelivery:
    """Sends a `webhook.test` event to this one endpoint, whatever it subscribes to."""
    with tenant_atomic(tenant_id):
        endpoint = _endpoint_locked(tenant_id, endpoint_id)
        if not endpoint.is_active:
            raise Conflict("The endpoint is inactive; activate it to send it events.", details={"field": "active"})
        payload = _payload(tenant_id=tenant_id, event_type=TEST_EVENT,
                           data={"endpoint_id": str(endpoint.id), "message": "A test event from Lode."})
        [delivery] = _deliveries_write(tenant_id=tenant_id, endpoints=[endpoint], payload=payload)
        _audit(tenant_id, "tested", by, endpoint, {"event_id": payload["id"]})
    return delivery


# --- Events -----------------------------------------------------------------------------------------


def _payload(*, tenant_id: UUID | str, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"webhook event data must be a dict, not {type(data).__name__}")
    # Through JSON once: dates, UUIDs and Decimals become strings now, as the receiver sees them.
    clean = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    payload = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": event_type,
        "created": int(timezone.now().timestamp()),
        "tenant": str(tenant_id),
        "data": clean,
    }
    if len(webhook_body(payload)) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"webhook event {event_type} is larger than {MAX_PAYLOAD_BYTES} bytes; send ids, not content")
    return payload


def webhook_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed). The top-level keys keep their documented order."""
    ordered = {key: payload[key] for key in ("id", "type", "created", "tenant", "data") if key in payload}
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()


def _deliveries_write(*, tenant_id: UUID | str, endpoints: list[WebhookEndpoint], payload: dict[str, Any]) -> list[WebhookDelivery]:
    now = timezone.now()
    deliveries = [
        WebhookDelivery(tenant_id=tenant_id, endpoint=endpoint, event_id=payload["id"], event_type=payload["type"],
                        payload=payload, next_attempt_at=now, created_at=now)
        for endpoint in endpoints
    ]
    WebhookDelivery.objects.bulk_create(deliveries)
    sends = [(delivery.id, 1) for delivery in deliveries]
    transaction.on_commit(lambda: [_enqueue(tenant_id=tenant_id, delivery_id=d, attempt=a) for d, a in sends])
    return deliveries


def webhook_emit(*, tenant_id: UUID | str, event_type: str, data: dict[str, Any]) -> list[WebhookDelivery]:
    """Writes one delivery per active endpoint of the tenant subscribed to `event_type`, in the
    caller's transaction; they are sent once it commits (and never, if it rolls back)."""
    if not webhook_event_is_known(event_type):
        raise ValueError(f"webhook event type {event_type!r} is not registered (webhook_event_register)")
    payload = _payload(tenant_id=tenant_id, event_type=event_type, data=data)
    with tenant_atomic(tenant_id):
        endpoints = list(
            WebhookEndpoint.objects.filter(tenant_id=tenant_id, is_active=True)
            .filter(Q(event_types__contains=[event_type]) | Q(event_types__contains=[ALL_EVENTS]))
            .only("id", "tenant_id")
        )
        if not endpoints:
            return []
        return _deliveries_write(tenant_id=tenant_id, endpoints=endpoints, payload=payload)


# --- Delivery -----------------------------------------------------------------------------------------


def _enqueue(*, tenant_id: UUID | str, delivery_id: UUID | str, attempt: int, countdown: float | None = None) -> bool:
    """Sends the Celery message. A broker outage is logged, not raised: the delivery stays pending
    and webhook_deliveries_redispatch sends it again."""
    from .tasks import deliver_webhook

    try:
        deliver_webhook.apply_async(
            args=[str(tenant_id), str(delivery_id), attempt], queue="cpu", countdown=countdown, retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
    except Exception:  # the broker's errors are many (kombu, redis, socket); all mean "not sent"
        logger.exception("could not send webhook delivery %s; the redispatcher will retry", delivery_id)
        return False
    return True


def _backoff_seconds(attempts_made: int) -> float:
    schedule = settings.WEBHOOK_RETRY_SCHEDULE_SECONDS
    return float(schedule[min(attempts_made, len(schedule)) - 1])


def webhook_delivery_attempt(*, tenant_id: UUID | str, delivery_id: UUID | str, attempt: int) -> str:
    """Makes attempt number `attempt` of a delivery, once. The row lock (skip_locked) keeps a
    second worker with the same message away while the first one sends; the attempt number and
    due time make duplicate, stale and early messages do nothing. Returns what happened."""
    now = timezone.now()
    with tenant_atomic(tenant_id):
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",)).select_related("endpoint")
            .filter(tenant_id=tenant_id, id=delivery_id).first()
        )
        if delivery is None:
            return "skipped"  # being sent by another worker right now, or deleted with its endpoint
        if delivery.status != WebhookDeliveryStatus.PENDING or delivery.attempts != attempt - 1:
            return "skipped"  # done already, or a message for an attempt that was made
        if delivery.next_attempt_at and delivery.next_attempt_at > now + EARLY_TOLERANCE:
            return "skipped"  # not due: a duplicate of a message that is still to come
        endpoint = delivery.endpoint
        delivery.attempts += 1
        delivery.last_attempt_at = now
        if not endpoint.is_active:
            delivery.status = WebhookDeliveryStatus.FAILED
            delivery.next_attempt_at = None
            delivery.last_status_code = None
            delivery.last_error = "not sent: the endpoint was deactivated"
            delivery.save(update_fields=["status", "attempts", "last_attempt_at", "next_attempt_at", "last_status_code",
                                         "last_error"])
            return delivery.status
        body = webhook_body(delivery.payload)
        headers = {
            SIGNATURE_HEADER: webhook_signature_header(endpoint.signing_secrets(now=now), body),
            EVENT_ID_HEADER: delivery.event_id,
            EVENT_TYPE_HEADER: delivery.event_type,
            DELIVERY_ID_HEADER: str(delivery.id),
        }
        response = webhook_post(url=endpoint.url, body=body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT_SECONDS)
        delivery.last_status_code = response.status_code
        delivery.last_error = response.error[:500]
        delivery.last_response_body = response.body[:500]
        delivery.response_time_ms = response.elapsed_ms
        if response.is_success:
            delivery.status = WebhookDeliveryStatus.SUCCEEDED
            delivery.delivered_at = timezone.now()
            delivery.next_attempt_at = None
        elif delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            delivery.status = WebhookDeliveryStatus.FAILED
            delivery.next_attempt_at = None
        else:
            countdown = _backoff_seconds(delivery.attempts)
            delivery.next_attempt_at = now + timedelta(seconds=countdown)
            next_attempt = delivery.attempts + 1
            transaction.on_commit(lambda: _enqueue(tenant_id=tenant_id, delivery_id=delivery_id, attempt=next_attempt,
                                                   countdown=countdown))
        delivery.save(update_fields=[
            "status", "attempts", "next_attempt_at", "last_attempt_at", "last_status_code", "last_error",
            "last_response_body", "response_time_ms", "delivered_at",
        ])
        if delivery.status == WebhookDeliveryStatus.FAILED:
            logger.warning("webhook delivery %s failed after %s attempts: %s", delivery.id, delivery.attempts,
                           delivery.last_error)
        return delivery.status


def webhook_deliveries_redispatch(*, late_after_seconds: float | None = None, limit: int = 500) -> list[str]:
    """Sends again the messages of pending deliveries that are overdue (their message was lost:
    Redis restarted, the broker was down at commit). Duplicates are harmless: an attempt is made
    once. Each re-send moves the delivery's due time, so a long outage is not flooded."""
    late = timedelta(seconds=settings.WEBHOOK_REDISPATCH_AFTER_SECONDS if late_after_seconds is None else late_after_seconds)
    now = timezone.now()
    # The scan spans tenants; each re-send is written in its delivery's own tenant context.
    overdue = (
        dangerously_all_tenants(WebhookDelivery)
        .filter(status=WebhookDeliveryStatus.PENDING, next_attempt_at__lte=now - late)
        .order_by("next_attempt_at")
        .values_list("tenant_id", "id", "attempts")[:limit]
    )
    sent: list[str] = []
    for tenant_id, delivery_id, attempts in overdue:
        with tenant_atomic(tenant_id):
            moved = WebhookDelivery.objects.filter(
                id=delivery_id, status=WebhookDeliveryStatus.PENDING, attempts=attempts
            ).update(next_attempt_at=now)
        if moved and _enqueue(tenant_id=tenant_id, delivery_id=delivery_id, attempt=attempts + 1):
            sent.append(str(delivery_id))
    if sent:
        logger.info("re-sent %s overdue webhook deliveries", len(sent))
    return sent
