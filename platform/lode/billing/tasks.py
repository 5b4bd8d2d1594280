"""Celery entry points of billing."""
from celery import shared_task

from . import services, storage


@shared_task(name="lode.billing.close_periods", acks_late=True, time_limit=3600, soft_time_limit=3500)
def close_periods() -> dict:
    """Closes last month for every tenant once its grace period passed (idempotent)."""
    return services.periods_close_due()


@shared_task(name="lode.billing.sample_storage", acks_late=True, time_limit=1800, soft_time_limit=1700)
def sample_storage() -> dict:
    """Bills the last hour's stored bytes as byte-hours (idempotent per tenant and hour)."""
    return storage.storage_sample()


# The Stripe tasks live beside the integration; importing them here registers them with workers.
from .stripe_sync import stripe_push_invoice, stripe_push_pending  # noqa: E402,F401
