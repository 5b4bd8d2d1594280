"""Celery entry points of webhooks (cpu queue). Thin: ids in, services out. Loaded by the
workers through CELERY_IMPORTS."""
from celery import shared_task

from .services import webhook_deliveries_redispatch, webhook_delivery_attempt


# The send itself is bounded by WEBHOOK_TIMEOUT_SECONDS per address; the limits only catch a hang.
@shared_task(name="lode.core.webhooks.deliver", acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             time_limit=90, soft_time_limit=60)
def deliver_webhook(tenant_id: str, delivery_id: str, attempt: int) -> str:
    return webhook_delivery_attempt(tenant_id=tenant_id, delivery_id=delivery_id, attempt=attempt)


@shared_task(name="lode.core.webhooks.redispatch", acks_late=True, ignore_result=True, time_limit=120,
             soft_time_limit=100, expires=60)
def redispatch_webhooks() -> int:
    return len(webhook_deliveries_redispatch())
