"""Test data for billing through the real services, plus the plan-catalogue rows staff would enter
in the admin (plans are platform data, not a tenant's)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

from lode.billing import services
from lode.billing.models import BillingAccount, Plan, PlanPrice, PlanVersion, Subscription
from tenants.db_context import tenant_atomic

UTC = timezone.utc


def plan_make(*, code: str | None = None, base_fee_minor: int = 0, prices: list[dict], is_prepaid: bool = False,
              currency: str = "USD") -> PlanVersion:
    plan = Plan.objects.create(code=code or f"plan-{uuid.uuid4().hex[:8]}", name=(code or "Test").title(),
                               currency=currency, is_prepaid=is_prepaid)
    version = PlanVersion.objects.create(plan=plan, version=1, base_fee_minor=base_fee_minor)
    for price in prices:
        PlanPrice.objects.create(plan_version=version, **price)
    return version


def subscriptions_set(tenant_id, segments: list[tuple[PlanVersion, datetime, datetime | None]]) -> None:
    """A tenant's plan history as staff would have it after past plan changes (subscription_change
    itself refuses dates in the past, so a past month is set up here)."""
    services.account_ensure(tenant_id=tenant_id)
    with tenant_atomic(tenant_id):
        # Billing began with the first segment: usage dated from then on is accounted as dated.
        BillingAccount.objects.filter(tenant_id=tenant_id).update(closed_through=segments[0][1])
        Subscription.objects.all().delete()
        for version, starts_at, ends_at in segments:
            Subscription.objects.create(tenant_id=tenant_id, plan_version=version, starts_at=starts_at, ends_at=ends_at)


def tax_rate_set(tenant_id, rate: str, label: str = "VAT") -> None:
    services.account_ensure(tenant_id=tenant_id)
    with tenant_atomic(tenant_id):
        BillingAccount.objects.filter(tenant_id=tenant_id).update(tax_rate=Decimal(rate), tax_label=label)


def usage(meter: str, quantity, *, key: str | None = None, dimension: str = "", at: datetime | None = None,
          source_type: str = "request", source_id: str = "test") -> services.UsageInput:
    return services.UsageInput(meter=meter, dimension=dimension, quantity=quantity,
                               idempotency_key=key or f"test-{uuid.uuid4().hex}", source_type=source_type,
                               source_id=source_id, occurred_at=at)


def month(year: int, month_number: int, day: int = 1, hour: int = 0) -> datetime:
    return datetime(year, month_number, day, hour, tzinfo=UTC)
