"""Reads of billing data: periods, plan terms, usage totals, cost so far and forecast, credits."""
from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal
from functools import lru_cache
from uuid import UUID

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from lode.core.errors import NotFound
from tenants.db_context import tenant_atomic

from . import rating
from .meters import METERS
from .models import BillingAccount, CreditApplication, CreditGrant, Invoice, Plan, PlanVersion, Quota, Subscription


def period_bounds(at: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) that contains `at`: [start, end)."""
    at = at.astimezone(dt_timezone.utc)
    start = datetime(at.year, at.month, 1, tzinfo=dt_timezone.utc)
    days = calendar.monthrange(at.year, at.month)[1]
    return start, start + timedelta(days=days)


def period_parse(value: str) -> tuple[datetime, datetime]:
    """'2026-11' -> that month's bounds; raises ValueError on anything else."""
    year_text, _, month_text = value.partition("-")
    if len(year_text) != 4 or len(month_text) != 2 or not (year_text + month_text).isdigit():
        raise ValueError("expected YYYY-MM")
    return period_bounds(datetime(int(year_text), int(month_text), 1, tzinfo=dt_timezone.utc))


def period_label(start: datetime) -> str:
    return start.strftime("%Y-%m")


def meter_label(meter: str, dimension: str) -> str:
    unit = METERS[meter].unit if meter in METERS else meter
    name = meter.replace("_", " ").capitalize()
    return f"{name}, {dimension} ({unit}s)" if dimension else f"{name} ({unit}s)"


@lru_cache(maxsize=256)
def plan_terms(plan_version_id: int) -> rating.PlanTerms:
    """A plan version's prices. Versions never change once written, so they cache forever."""
    version = PlanVersion.objects.select_related("plan").get(id=plan_version_id)
    prices = tuple(
        rating.Price.from_tiers_json(
            meter=price.meter, dimension=price.dimension, included_quantity=price.included_quantity,
            price_unit=price.price_unit, tiers=price.tiers,
        )
        for price in version.prices.order_by("meter", "dimension")
    )
    return rating.PlanTerms(plan_version_id=version.id, plan_name=version.plan.name, base_fee_minor=version.base_fee_minor, prices=prices)


def plan_version_current(plan: Plan) -> PlanVersion | None:
    return plan.versions.order_by("-version").first()


def plan_list_public() -> list[tuple[Plan, PlanVersion]]:
    plans = []
    for plan in Plan.objects.filter(is_public=True).order_by("id"):
        version = plan_version_current(plan)
        if version is not None:
            plans.append((plan, version))
    return plans


@dataclass(frozen=True)
class Segment:
    plan_version_id: int
    start: datetime
    end: datetime


def subscription_segments(*, tenant_id: UUID | str, start: datetime, end: datetime) -> list[Segment]:
    with tenant_atomic(tenant_id):
        subscriptions = list(
            Subscription.objects.filter(starts_at__lt=end).exclude(ends_at__lte=start).order_by("starts_at")
        )
    segments = []
    for subscription in subscriptions:
        seg_start = max(subscription.starts_at, start)
        seg_end = min(subscription.ends_at or end, end)
        if seg_end > seg_start:
            segments.append(Segment(subscription.plan_version_id, seg_start, seg_end))
    return segments


def subscription_current(*, tenant_id: UUID | str, at: datetime | None = None) -> Subscription | None:
    at = at or timezone.now()
    with tenant_atomic(tenant_id):
        return (
            Subscription.objects.select_related("plan_version__plan")
            .filter(starts_at__lte=at).exclude(ends_at__lte=at).order_by("-starts_at").first()
        )


def usage_totals(*, tenant_id: UUID | str, start: datetime, end: datetime) -> dict[tuple[str, str], Decimal]:
    with tenant_atomic(tenant_id), connection.cursor() as cursor:
        cursor.execute(
            "SELECT meter, dimension, SUM(quantity) FROM billing_usageevent"
            " WHERE tenant_id = %s AND accounted_at >= %s AND accounted_at < %s GROUP BY meter, dimension",
            [str(tenant_id), start, end],
        )
        return {(meter, dimension): total for meter, dimension, total in cursor.fetchall()}


def usage_event_count(*, tenant_id: UUID | str, start: datetime, end: datetime) -> int:
    with tenant_atomic(tenant_id), connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM billing_usageevent WHERE tenant_id = %s AND accounted_at >= %s AND accounted_at < %s",
            [str(tenant_id), start, end],
        )
        return cursor.fetchone()[0]


def usage_daily(*, tenant_id: UUID | str, start: datetime, end: datetime) -> list[dict]:
    """Per day and meter (all dimensions together): [{"day": date, "meter", "quantity"}]."""
    with tenant_atomic(tenant_id), connection.cursor() as cursor:
        cursor.execute(
            "SELECT date_trunc('day', accounted_at AT TIME ZONE 'UTC')::date AS day, meter, SUM(quantity)"
            " FROM billing_usageevent WHERE tenant_id = %s AND accounted_at >= %s AND accounted_at < %s"
            " GROUP BY 1, 2 ORDER BY 1, 2",
            [str(tenant_id), start, end],
        )
        return [{"day": day, "meter": meter, "quantity": quantity} for day, meter, quantity in cursor.fetchall()]


def rate_usage(
    *, tenant_id: UUID | str, start: datetime, end: datetime, usage_end: datetime | None = None
) -> list[rating.RatedLine]:
    """Lines for [start, end) with the usage recorded in [start, usage_end or end)."""
    period_start, period_end = period_bounds(start)
    period_seconds = int((period_end - period_start).total_seconds())
    lines: list[rating.RatedLine] = []
    for segment in subscription_segments(tenant_id=tenant_id, start=start, end=end):
        usage = usage_totals(tenant_id=tenant_id, start=segment.start, end=min(segment.end, usage_end or segment.end))
        lines += rating.segment_rate(
            terms=plan_terms(segment.plan_version_id), usage=usage, segment_start=segment.start,
            segment_end=segment.end, period_seconds=period_seconds, meter_label=meter_label,
        )
    return lines


@dataclass(frozen=True)
class PeriodSummary:
    period_start: datetime
    period_end: datetime
    currency: str
    usage: dict[tuple[str, str], Decimal]
    cost_so_far_minor: int
    forecast_minor: int
    lines: list[rating.RatedLine]


def period_summary(*, tenant_id: UUID | str, at: datetime | None = None) -> PeriodSummary:
    """The current period's usage, its cost so far (fees and usage to date) and a forecast that
    extrapolates the usage to the end of the period at the rate seen so far."""
    at = at or timezone.now()
    start, end = period_bounds(at)
    account = account_get(tenant_id=tenant_id)
    lines = rate_usage(tenant_id=tenant_id, start=start, end=end, usage_end=at)
    usage: dict[tuple[str, str], Decimal] = {}
    for line in lines:
        if line.kind == "usage":
            usage[(line.meter, line.dimension)] = usage.get((line.meter, line.dimension), Decimal(0)) + line.quantity
    cost = sum(line.amount_minor for line in lines)
    elapsed = max((at - start).total_seconds(), 3600.0)  # a first hour's spike is not a month's trend
    factor = Decimal((end - start).total_seconds()) / Decimal(elapsed)
    forecast = 0
    period_seconds = int((end - start).total_seconds())
    for segment in subscription_segments(tenant_id=tenant_id, start=start, end=end):
        segment_usage = usage_totals(tenant_id=tenant_id, start=segment.start, end=min(segment.end, at))
        projected = {key: quantity * factor for key, quantity in segment_usage.items()}
        forecast += sum(
            line.amount_minor for line in rating.segment_rate(
                terms=plan_terms(segment.plan_version_id), usage=projected, segment_start=segment.start,
                segment_end=segment.end, period_seconds=period_seconds,
            )
        )
    return PeriodSummary(start, end, account.currency, usage, cost, max(forecast, cost), lines)


def account_get(*, tenant_id: UUID | str) -> BillingAccount:
    from .services import account_ensure

    return account_ensure(tenant_id=tenant_id)


def credit_balance(*, tenant_id: UUID | str, at: datetime | None = None) -> int:
    """Unspent credit that has not expired."""
    at = at or timezone.now()
    with tenant_atomic(tenant_id):
        granted = CreditGrant.objects.filter(granted_at__lte=at).exclude(expires_at__lte=at)
        total = granted.aggregate(total=Sum("amount_minor"))["total"] or 0
        used = CreditApplication.objects.filter(grant__in=granted).aggregate(total=Sum("amount_minor"))["total"] or 0
    return total - used


def credit_grant_list(*, tenant_id: UUID | str) -> list[dict]:
    with tenant_atomic(tenant_id):
        grants = list(CreditGrant.objects.order_by("-granted_at"))
        used = dict(
            CreditApplication.objects.values_list("grant_id").annotate(total=Sum("amount_minor")).values_list("grant_id", "total")
        )
    return [{"grant": grant, "used_minor": used.get(grant.id, 0), "remaining_minor": grant.amount_minor - used.get(grant.id, 0)}
            for grant in grants]


def quota_list(*, tenant_id: UUID | str) -> list[Quota]:
    with tenant_atomic(tenant_id):
        return list(Quota.objects.order_by("meter", "dimension", "kind"))


def invoice_list(*, tenant_id: UUID | str):
    return Invoice.objects.filter(tenant_id=tenant_id).order_by("-period_start", "-created_at")


def invoice_get(*, tenant_id: UUID | str, invoice_id: UUID | str) -> Invoice:
    with tenant_atomic(tenant_id):
        try:
            return Invoice.objects.prefetch_related("lines").get(id=invoice_id)
        except (Invoice.DoesNotExist, ValueError, DjangoValidationError):
            raise NotFound("No such invoice.") from None
