"""Reads of webhooks, scoped to one tenant."""
from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet

from lode.core.errors import NotFound, ValidationFailed
from tenants.db_context import tenant_atomic

from .models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint


def webhook_endpoint_get(*, tenant_id: UUID | str, endpoint_id: UUID | str) -> WebhookEndpoint:
    with tenant_atomic(tenant_id):
        endpoint = WebhookEndpoint.objects.filter(tenant_id=tenant_id, id=endpoint_id).first()
    if endpoint is None:
        raise NotFound("Webhook endpoint not found.")
    return endpoint


def webhook_delivery_list(*, tenant_id: UUID | str, endpoint_id: UUID | str, status: str | None = None) -> QuerySet:
    """An endpoint's deliveries (the caller paginates). 404 for an endpoint that is not the tenant's."""
    endpoint = webhook_endpoint_get(tenant_id=tenant_id, endpoint_id=endpoint_id)
    deliveries = WebhookDelivery.objects.filter(tenant_id=tenant_id, endpoint_id=endpoint.id)
    if status:
        if status not in WebhookDeliveryStatus.values:
            raise ValidationFailed(f"status: must be one of {', '.join(WebhookDeliveryStatus.values)}",
                                   details={"field": "status"})
        deliveries = deliveries.filter(status=status)
    return deliveries
