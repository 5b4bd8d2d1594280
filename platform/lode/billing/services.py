"""Writes of billing: the metering call, plan changes, quotas and credits, admission of work
against quotas, and the monthly close that turns a period's usage into an invoice."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection, transaction
from django.utils import timezone

from lode.core.errors import Conflict, LodeError, NotFound, ValidationFailed
from tenants.db_context import dangerously_all_tenants, tenant_atomic
from tenants.models import Organization
from tenants.services import actor_api_key, actor_user, audit_record

from . import rating, selectors
from .meters import METERS, meter_get
from .models import (
    BillingAccount,
    CreditApplication,
    CreditGrant,
    Invoice,
    InvoiceLine,
    Plan,
    Quota,
    Subscription,
    UsageEvent,
)

logger = logging.getLogger(__name__)

MAX_QUANTITY = Decimal("1e17")
MAX_BATCH = 50_000


class QuotaExceeded(LodeError):
    code = "quota_exceeded"
    http_status = 402
    default_message = "This work would pass the organization's limits."


# --- accounts and plans ------------------------------------------------------------------------


def account_ensure(*, tenant_id: UUID | str) -> BillingAccount:
    """The tenant's billing account, created on first use with the default plan from the
    organization's creation (or now, for one that predates billing)."""
    with tenant_atomic(tenant_id):
        account = BillingAccount.objects.filter(tenant_id=tenant_id).first()
        if account is not None:
            return account
        plan = Plan.objects.filter(code=settings.BILLING_DEFAULT_PLAN).first()
        version = selectors.plan_version_current(plan) if plan else None
        if version is None:
            raise LodeError(f"The default plan {settings.BILLING_DEFAULT_PLAN!r} does not exist.")
        # Billing starts with the month the organization was created in. The close mark starts
        # there too, so usage dated earlier is accounted at that instant: no usage ever falls
        # outside a subscription, unrated.
        founded = Organization.objects.filter(id=tenant_id).values_list("created_at", flat=True).first()
        starts_at, _ = selectors.period_bounds(min(founded or timezone.now(), timezone.now()))
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO billing_billingaccount (tenant_id, currency, tax_rate, tax_label, billing_email,"
                " stripe_customer_id, closed_through, created_at) VALUES (%s, %s, %s, 'Tax', '', '', %s, now())"
                " ON CONFLICT DO NOTHING",
                [str(tenant_id), plan.currency, settings.BILLING_DEFAULT_TAX_RATE, starts_at],
            )
            created = cursor.rowcount == 1
        if created:
            Subscription.objects.create(tenant_id=tenant_id, plan_version=version, starts_at=starts_at)
        return BillingAccount.objects.get(tenant_id=tenant_id)


def subscription_change(
    *, tenant_id: UUID | str, plan_code: str, effective_at: datetime | None = None, by: Any = None,
    ip: str | None = None,
) -> Subscription:
    """Moves the tenant to the plan's current version at `effective_at` (now when omitted; never in
    the past: a closed period cannot be re-priced). The close prorates both plans' fees and
    allowances for their share of the month."""
    now = timezone.now()
    effective_at = effective_at or now
    if effective_at < now - timedelta(seconds=5):
        raise ValidationFailed("effective_at: a plan change cannot take effect in the past", details={"field": "effective_at"})
    plan = Plan.objects.filter(code=plan_code).first()
    version = selectors.plan_version_current(plan) if plan else None
    if plan is None or version is None or (not plan.is_public and not getattr(by, "is_staff", False)):
        raise ValidationFailed(f"plan: no plan {plan_code!r}", details={"field": "plan"})
    account_ensure(tenant_id=tenant_id)
    with tenant_atomic(tenant_id):
        BillingAccount.objects.select_for_update().get(tenant_id=tenant_id)
        if plan.currency != BillingAccount.objects.get(tenant_id=tenant_id).currency:
            raise ValidationFailed("plan: its currency differs from the account's", details={"field": "plan"})
        # Changes already scheduled after this instant are replaced by this one.
        Subscription.objects.filter(starts_at__gte=effective_at).delete()
        current = Subscription.objects.filter(starts_at__lt=effective_at).exclude(ends_at__lte=effective_at).order_by("-starts_at").first()
        if current is not None:
            if current.plan_version_id == version.id:
                current.ends_at = None
                current.save(update_fields=["ends_at"])
                return current
            current.ends_at = effective_at
            current.save(update_fields=["ends_at"])
        subscription = Subscription(
            tenant_id=tenant_id, plan_version=version, starts_at=effective_at,
            created_by=actor_user(by),
        )
        subscription.full_clean(exclude=["tenant", "plan_version", "created_by"])
        subscription.save()
        audit_record(
            tenant_id=tenant_id, action="billing.plan_changed", user=actor_user(by), api_key=actor_api_key(by),
            target=subscription, ip=ip,
            data={"plan": plan.code, "version": version.version, "effective_at": effective_at.isoformat()},
        )
    return subscription


# --- the metering call ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageInput:
    meter: str
    quantity: Decimal | int | str
    idempotency_key: str
    source_type: str
    source_id: str
    dimension: str = ""
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class UsageRecordResult:
    recorded: int
    duplicates: int


def _quantity(value: Any, index: int) -> Decimal:
    if isinstance(value, float) or isinstance(value, bool):
        raise ValidationFailed(f"events[{index}].quantity: give an int, a Decimal or a decimal string, not {type(value).__name__}",
                               details={"field": f"events[{index}].quantity"})
    try:
        quantity = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValidationFailed(f"events[{index}].quantity: not a number", details={"field": f"events[{index}].quantity"}) from None
    if not quantity.is_finite() or quantity <= 0 or quantity >= MAX_QUANTITY:
        raise ValidationFailed(f"events[{index}].quantity: must be more than 0 and less than 1e17",
                               details={"field": f"events[{index}].quantity"})
    if quantity.as_tuple().exponent < -6:
        raise ValidationFailed(f"events[{index}].quantity: at most 6 decimal places", details={"field": f"events[{index}].quantity"})
    return quantity


def _usage_validate(events: Sequence[UsageInput], now: datetime) -> list[tuple]:
    rows = []
    seen: set[str] = set()
    sources = set(UsageEvent.Source.values)
    for index, event in enumerate(events):
        meter = meter_get(event.meter)
        dimension = meter.dimension_check(event.dimension or "")
        quantity = _quantity(event.quantity, index)
        key = event.idempotency_key
        if not isinstance(key, str) or not key or len(key) > 200:
            raise ValidationFailed(f"events[{index}].idempotency_key: 1 to 200 characters", details={"field": f"events[{index}].idempotency_key"})
        if event.source_type not in sources:
            raise ValidationFailed(f"events[{index}].source_type: one of {', '.join(sorted(sources))}", details={"field": f"events[{index}].source_type"})
        if not event.source_id or len(event.source_id) > 100:
            raise ValidationFailed(f"events[{index}].source_id: 1 to 100 characters", details={"field": f"events[{index}].source_id"})
        occurred_at = event.occurred_at or now
        if timezone.is_naive(occurred_at):
            raise ValidationFailed(f"events[{index}].occurred_at: must carry a time zone", details={"field": f"events[{index}].occurred_at"})
        if occurred_at > now + timedelta(minutes=5):
            raise ValidationFailed(f"events[{index}].occurred_at: in the future", details={"field": f"events[{index}].occurred_at"})
        if key in seen:
            continue  # the same event twice in one batch: the first stands
        seen.add(key)
        rows.append((meter.name, dimension, quantity, occurred_at, event.source_type, event.source_id, key))
    return rows


def usage_record(*, tenant_id: UUID | str, events: Sequence[UsageInput]) -> UsageRecordResult:
    """The one metering call. Writes the events to the ledger in one statement; an event whose
    idempotency key the tenant's ledger already holds is dropped (a retry, a duplicate delivery,
    a resumed job re-sending its last report). Concurrent callers sending the same key: exactly
    one row, by the unique constraint. Usage dated in a period already closed is accounted at the
    start of the open one."""
    if not events:
        return UsageRecordResult(0, 0)
    if len(events) > MAX_BATCH:
        raise ValidationFailed(f"events: at most {MAX_BATCH} per call", details={"field": "events"})
    now = timezone.now()
    rows = _usage_validate(events, now)
    columns = list(zip(*rows))
    with tenant_atomic(tenant_id), connection.cursor() as cursor:
        # FOR SHARE: a close (FOR UPDATE) waits for this write to commit, and this write waits
        # for a running close, so the close mark read here stays true until commit.
        cursor.execute("SELECT closed_through FROM billing_billingaccount WHERE tenant_id = %s FOR SHARE", [str(tenant_id)])
        account = cursor.fetchone()
        if account is None:  # the tenant's first usage: open its account, then read it again
            account_ensure(tenant_id=tenant_id)
            cursor.execute("SELECT closed_through FROM billing_billingaccount WHERE tenant_id = %s FOR SHARE", [str(tenant_id)])
            account = cursor.fetchone()
        closed_through = account[0]
        cursor.execute(
            """
            INSERT INTO billing_usageevent
              (tenant_id, meter, dimension, quantity, occurred_at, accounted_at, recorded_at,
               source_type, source_id, idempotency_key)
            SELECT %s, e.meter, e.dimension, e.quantity, e.occurred_at,
                   GREATEST(e.occurred_at, COALESCE(%s::timestamptz, e.occurred_at)), %s,
                   e.source_type, e.source_id, e.idempotency_key
            FROM unnest(%s::text[], %s::text[], %s::numeric[], %s::timestamptz[], %s::text[], %s::text[], %s::text[])
                 AS e(meter, dimension, quantity, occurred_at, source_type, source_id, idempotency_key)
            -- One order for every writer: batches sharing keys (re-sends still in flight) then
            -- take the unique-index locks in the same order and wait instead of deadlocking.
            ORDER BY e.idempotency_key
            ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
            """,
            [str(tenant_id), closed_through, now, *[list(column) for column in columns]],
        )
        recorded = cursor.rowcount
    return UsageRecordResult(recorded=recorded, duplicates=len(events) - recorded)


# --- quotas, credits and admission ------------------------------------------------------------------


def quota_set(
    *, tenant_id: UUID | str, meter: str, dimension: str = "", kind: str, limit: Decimal | int | str, by: Any = None,
    ip: str | None = None,
) -> Quota:
    meter_obj = meter_get(meter)
    if dimension:
        meter_obj.dimension_check(dimension)
    if kind not in Quota.Kind.values:
        raise ValidationFailed("kind: hard or soft", details={"field": "kind"})
    try:
        limit_value = Decimal(str(limit))
    except InvalidOperation:
        raise ValidationFailed("limit: not a number", details={"field": "limit"}) from None
    if not limit_value.is_finite() or limit_value < 0 or limit_value >= MAX_QUANTITY:
        raise ValidationFailed("limit: must be 0 or more", details={"field": "limit"})
    with tenant_atomic(tenant_id):
        quota, _ = Quota.objects.update_or_create(
            tenant_id=tenant_id, meter=meter, dimension=dimension, kind=kind,
            defaults={"limit": limit_value, "notified_period": None},
        )
        audit_record(tenant_id=tenant_id, action="billing.quota_set", user=actor_user(by), api_key=actor_api_key(by),
                     target=quota, ip=ip,
                     data={"meter": meter, "dimension": dimension, "kind": kind, "limit": str(limit_value)})
    return quota


def quota_delete(*, tenant_id: UUID | str, quota_id: int, by: Any = None, ip: str | None = None) -> None:
    with tenant_atomic(tenant_id):
        quota = Quota.objects.filter(id=quota_id).first()
        if quota is None:
            raise NotFound("No such quota.")
        audit_record(tenant_id=tenant_id, action="billing.quota_deleted", user=actor_user(by), api_key=actor_api_key(by),
                     target=quota, ip=ip, data={"meter": quota.meter, "dimension": quota.dimension, "kind": quota.kind})
        quota.delete()


def spend_limits_set(
    *, tenant_id: UUID | str, hard_minor: int | None, soft_minor: int | None, by: Any = None, ip: str | None = None
) -> BillingAccount:
    for name, value in (("spend_limit_minor", hard_minor), ("soft_spend_limit_minor", soft_minor)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValidationFailed(f"{name}: a whole number of minor units, 0 or more", details={"field": name})
    account_ensure(tenant_id=tenant_id)
    with tenant_atomic(tenant_id):
        account = BillingAccount.objects.select_for_update().get(tenant_id=tenant_id)
        account.spend_limit_minor = hard_minor
        account.soft_spend_limit_minor = soft_minor
        account.save(update_fields=["spend_limit_minor", "soft_spend_limit_minor"])
        audit_record(tenant_id=tenant_id, action="billing.spend_limits_set", user=actor_user(by), api_key=actor_api_key(by),
                     target=account, ip=ip,
                     data={"hard_minor": hard_minor, "soft_minor": soft_minor})
    return account


def billing_email_set(*, tenant_id: UUID | str, email: str, by: Any = None, ip: str | None = None) -> BillingAccount:
    account = account_ensure(tenant_id=tenant_id)
    with tenant_atomic(tenant_id):
        account = BillingAccount.objects.select_for_update().get(tenant_id=tenant_id)
        account.billing_email = email
        try:
            account.full_clean(exclude=["tenant"], validate_unique=False, validate_constraints=False)
        except DjangoValidationError as exc:
            raise ValidationFailed("billing_email: not a valid address", details={"field": "billing_email", "errors": exc.messages}) from None
        account.save(update_fields=["billing_email"])
        audit_record(tenant_id=tenant_id, action="billing.email_set", user=actor_user(by), api_key=actor_api_key(by),
                     target=account, ip=ip, data={"billing_email": email})
    return account


def credit_grant(
    *, tenant_id: UUID | str, amount_minor: int, reason: str, expires_at: datetime | None = None, by: Any = None,
) -> CreditGrant:
    """Adds credit (staff, or a paid top-up)."""
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor <= 0:
        raise ValidationFailed("amount_minor: a positive whole number of minor units", details={"field": "amount_minor"})
    account = account_ensure(tenant_id=tenant_id)
    with tenant_atomic(tenant_id):
        grant = CreditGrant(
            tenant_id=tenant_id, amount_minor=amount_minor, currency=account.currency, reason=reason[:200],
            expires_at=expires_at, created_by=actor_user(by),
        )
        grant.full_clean(exclude=["tenant", "created_by"])
        grant.save()
        audit_record(tenant_id=tenant_id, action="billing.credit_granted", user=actor_user(by), api_key=actor_api_key(by),
                     target=grant, data={"amount_minor": amount_minor, "reason": reason[:200]})
    return grant


@dataclass(frozen=True)
class UsageEstimate:
    meter: str
    quantity: Decimal
    dimension: str = ""


@dataclass(frozen=True)
class Admission:
    estimated_cost_minor: int
    remaining_minor: int | None  # money left under the spend limit / prepaid credit; None: no cap
    currency: str
    usage: list[dict]


def _estimate_validate(estimate: Sequence[UsageEstimate]) -> list[UsageEstimate]:
    clean = []
    for index, item in enumerate(estimate):
        meter = meter_get(item.meter)
        dimension = meter.dimension_check(item.dimension or "")
        quantity = _quantity(item.quantity if not isinstance(item.quantity, Decimal) else item.quantity.quantize(rating.QUANTITY_STEP), index)
        clean.append(UsageEstimate(meter=meter.name, quantity=quantity, dimension=dimension))
    return clean


def usage_admit(*, tenant_id: UUID | str, estimate: Sequence[UsageEstimate], at: datetime | None = None) -> Admission:
    """Checks work before it starts: its estimated usage must fit under every hard quota, and its
    estimated cost under the spend limit and, on a prepaid plan, the unspent credit. Raises
    QuotaExceeded (402) with the numbers otherwise."""
    at = at or timezone.now()
    estimate = _estimate_validate(estimate)
    account = account_ensure(tenant_id=tenant_id)
    start, end = selectors.period_bounds(at)
    used = selectors.usage_totals(tenant_id=tenant_id, start=start, end=end)
    subscription = selectors.subscription_current(tenant_id=tenant_id, at=at)
    terms = selectors.plan_terms(subscription.plan_version_id) if subscription else None
    usage_report = []
    cost = Decimal(0)
    for item in estimate:
        price = terms.price_for(item.meter, item.dimension) if terms else None
        pool = [key for key in used if price is not None and terms.price_for(*key) == price]
        used_in_pool = sum((used[key] for key in pool), Decimal(0))
        item_cost = rating.marginal_cost(price=price, used=used_in_pool, extra=item.quantity)
        cost += item_cost
        usage_report.append({"meter": item.meter, "dimension": item.dimension, "quantity": str(item.quantity),
                             "estimated_cost_minor": rating.round_minor(item_cost)})
    estimated_minor = rating.round_minor(cost)

    with tenant_atomic(tenant_id):
        quotas = list(Quota.objects.filter(kind=Quota.Kind.HARD, meter__in={item.meter for item in estimate}))
    for quota in quotas:
        asked = sum((item.quantity for item in estimate
                     if item.meter == quota.meter and (not quota.dimension or item.dimension == quota.dimension)), Decimal(0))
        if not asked:
            continue
        already = sum((total for (meter, dimension), total in used.items()
                       if meter == quota.meter and (not quota.dimension or dimension == quota.dimension)), Decimal(0))
        remaining = max(Decimal(0), quota.limit - already)
        if asked > remaining:
            raise QuotaExceeded(
                f"{quota.meter}{':' + quota.dimension if quota.dimension else ''}: this needs {asked}"
                f" {METERS[quota.meter].unit}s, {remaining} remain under the hard limit of {quota.limit} this period.",
                details={"limit_type": "quota", "meter": quota.meter, "dimension": quota.dimension,
                         "limit": str(quota.limit), "used": str(already), "remaining": str(remaining),
                         "estimated": str(asked), "estimated_cost_minor": estimated_minor, "currency": account.currency},
            )

    remaining_minor = None
    if account.spend_limit_minor is not None or (subscription and subscription.plan_version.plan.is_prepaid):
        so_far = sum(line.amount_minor for line in selectors.rate_usage(tenant_id=tenant_id, start=start, end=end, usage_end=at))
        if account.spend_limit_minor is not None:
            remaining_minor = max(0, account.spend_limit_minor - so_far)
            limit_type = "spend_limit"
        if subscription and subscription.plan_version.plan.is_prepaid:
            credit_left = max(0, selectors.credit_balance(tenant_id=tenant_id, at=at) - so_far - _unpaid_minor(tenant_id))
            if remaining_minor is None or credit_left < remaining_minor:
                remaining_minor, limit_type = credit_left, "prepaid_credit"
        if estimated_minor > remaining_minor:
            raise QuotaExceeded(
                f"This work is estimated at {estimated_minor} minor units of {account.currency}; "
                f"{remaining_minor} remain ({limit_type.replace('_', ' ')}).",
                details={"limit_type": limit_type, "remaining_minor": remaining_minor, "estimated_cost_minor": estimated_minor,
                         "cost_so_far_minor": so_far, "currency": account.currency, "usage": usage_report},
            )
    return Admission(estimated_cost_minor=estimated_minor, remaining_minor=remaining_minor, currency=account.currency, usage=usage_report)


def _unpaid_minor(tenant_id: UUID | str) -> int:
    """What issued, unpaid invoices still owe after the credit they already used: a prepaid
    tenant's debt, which its remaining credit must cover before new work."""
    with tenant_atomic(tenant_id):
        return sum(Invoice.objects.filter(status=Invoice.Status.OPEN).values_list("total_minor", flat=True))


@dataclass(frozen=True)
class LimitState:
    hard_reached: list[dict]
    soft_crossed: list[dict]


def limits_check(*, tenant_id: UUID | str, meters: Sequence[str], at: datetime | None = None) -> LimitState:
    """After usage was recorded: which hard quotas are now used up (a running job stops at its
    next checkpoint) and which soft quotas were crossed this period for the first time (the
    tenant is notified, once a period)."""
    at = at or timezone.now()
    start, end = selectors.period_bounds(at)
    with tenant_atomic(tenant_id):
        quotas = list(Quota.objects.filter(meter__in=set(meters)))
    if not quotas:
        return LimitState([], [])
    used = selectors.usage_totals(tenant_id=tenant_id, start=start, end=end)
    hard, soft = [], []
    for quota in quotas:
        already = sum((total for (meter, dimension), total in used.items()
                       if meter == quota.meter and (not quota.dimension or dimension == quota.dimension)), Decimal(0))
        if already < quota.limit:
            continue
        state = {"meter": quota.meter, "dimension": quota.dimension, "limit": str(quota.limit), "used": str(already)}
        if quota.kind == Quota.Kind.HARD:
            hard.append(state)
        elif quota.notified_period != start.date():
            with tenant_atomic(tenant_id):
                updated = Quota.objects.filter(id=quota.id).exclude(notified_period=start.date()).update(notified_period=start.date())
                if updated:
                    audit_record(tenant_id=tenant_id, action="billing.soft_limit_crossed", target=quota, data=state)
                    soft.append(state)
    if soft:
        _notify_soft_limits(tenant_id=tenant_id, crossed=soft)
    return LimitState(hard, soft)


def _notify_soft_limits(*, tenant_id: UUID | str, crossed: list[dict]) -> None:
    from django.core.mail import send_mail

    from tenants.selectors import organization_owner_emails

    account = account_ensure(tenant_id=tenant_id)
    recipients = [account.billing_email] if account.billing_email else organization_owner_emails(tenant_id=tenant_id)
    if not recipients:
        return
    body = "\n".join(f"- {item['meter']} {item['dimension']}: {item['used']} used, soft limit {item['limit']}" for item in crossed)

    def send() -> None:
        try:
            send_mail("Lode: a usage soft limit was reached", f"This period's usage passed a soft limit:\n{body}\n",
                      settings.DEFAULT_FROM_EMAIL, recipients)
        except Exception:  # mail is a courtesy; the audit entry is the record
            logger.exception("could not send the soft-limit notice for tenant %s", tenant_id)

    transaction.on_commit(send)


# --- the monthly close --------------------------------------------------------------------------------


def invoice_close(*, tenant_id: UUID | str, period_start: datetime, now: datetime | None = None) -> Invoice:
    """Rates a finished period into an invoice and issues it. Idempotent: the period's live
    invoice, when there is one, is returned unchanged. Holding the account FOR UPDATE, it moves the
    close mark to the period's end, so usage arriving late for this period is billed in the next."""
    now = now or timezone.now()
    start, end = selectors.period_bounds(period_start)
    if start != period_start:
        raise ValidationFailed("period: must start on the first of a month, 00:00 UTC", details={"field": "period"})
    if end > now:
        raise ValidationFailed("period: has not ended yet", details={"field": "period", "period_end": end.isoformat()})
    account_ensure(tenant_id=tenant_id)
    with tenant_atomic(tenant_id):
        account = BillingAccount.objects.select_for_update().get(tenant_id=tenant_id)
        existing = Invoice.objects.filter(period_start=start).exclude(status=Invoice.Status.VOID).first()
        if existing is not None:
            return existing
        if account.closed_through is None or account.closed_through < end:
            account.closed_through = end
            account.save(update_fields=["closed_through"])

        lines = selectors.rate_usage(tenant_id=tenant_id, start=start, end=end)
        subtotal = sum(line.amount_minor for line in lines)
        invoice = Invoice.objects.create(
            tenant_id=tenant_id, period_start=start, period_end=end, currency=account.currency,
            subtotal_minor=subtotal, tax_rate=account.tax_rate, tax_label=account.tax_label,
            usage_event_count=selectors.usage_event_count(tenant_id=tenant_id, start=start, end=end),
        )
        InvoiceLine.objects.bulk_create([
            InvoiceLine(
                tenant_id=tenant_id, invoice=invoice, position=position, kind=line.kind, description=line.description[:300],
                plan_version_id=line.plan_version_id, segment_start=line.segment_start, segment_end=line.segment_end,
                meter=line.meter, dimension=line.dimension, quantity=line.quantity, included_quantity=line.included_quantity,
                billable_quantity=line.billable_quantity, tiers=line.tiers, amount_minor=line.amount_minor,
            )
            for position, line in enumerate(lines, start=1)
        ])
        credits = _credits_apply(tenant_id=tenant_id, invoice=invoice, amount_minor=subtotal, start=start, now=now)
        invoice.credits_applied_minor = credits
        invoice.tax_minor = rating.tax_amount(subtotal - credits, account.tax_rate)
        invoice.total_minor = subtotal - credits + invoice.tax_minor
        invoice.save(update_fields=["credits_applied_minor", "tax_minor", "total_minor"])
        _invoice_issue(invoice, now=now)
        audit_record(tenant_id=tenant_id, action="billing.invoice_issued", target=invoice,
                     data={"number": invoice.number, "total_minor": invoice.total_minor, "period": selectors.period_label(start)})
    if invoice.status == Invoice.Status.OPEN and settings.STRIPE_SECRET_KEY:
        from .stripe_sync import invoice_push_on_commit

        invoice_push_on_commit(tenant_id=tenant_id, invoice_id=invoice.id)
    return invoice


def _credits_apply(*, tenant_id: UUID | str, invoice: Invoice, amount_minor: int, start: datetime, now: datetime) -> int:
    """Draws credit for the invoice from grants held at the close that had not expired before the
    period began, soonest-expiring first."""
    if amount_minor <= 0:
        return 0
    grants = list(
        CreditGrant.objects.select_for_update()
        .filter(granted_at__lte=now, currency=invoice.currency).exclude(expires_at__lte=start)
        .order_by("expires_at", "granted_at", "id")
    )
    applied = 0
    for grant in grants:
        used = sum(CreditApplication.objects.filter(grant=grant).values_list("amount_minor", flat=True))
        take = min(grant.amount_minor - used, amount_minor - applied)
        if take <= 0:
            continue
        CreditApplication.objects.create(tenant_id=tenant_id, invoice=invoice, grant=grant, amount_minor=take)
        applied += take
        if applied == amount_minor:
            break
    return applied


def _invoice_issue(invoice: Invoice, *, now: datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval('billing_invoice_number_seq')")
        sequence = cursor.fetchone()[0]
    invoice.number = f"{settings.BILLING_INVOICE_PREFIX}-{invoice.period_start:%Y%m}-{sequence:06d}"
    invoice.issued_at = now
    invoice.status = Invoice.Status.OPEN
    fields = ["number", "issued_at", "status"]
    if invoice.total_minor == 0:
        invoice.status, invoice.paid_at = Invoice.Status.PAID, now
        invoice.payment_reference = "nothing due"
        fields += ["paid_at", "payment_reference"]
    invoice.save(update_fields=fields)


def invoice_mark_paid(*, tenant_id: UUID | str, invoice_id: UUID | str, reference: str, by: Any = None,
                      paid_at: datetime | None = None) -> Invoice:
    with tenant_atomic(tenant_id):
        invoice = _invoice_locked(tenant_id, invoice_id)
        if invoice.status == Invoice.Status.PAID:
            return invoice
        if invoice.status != Invoice.Status.OPEN:
            raise Conflict(f"A {invoice.status} invoice cannot be paid.", details={"status": invoice.status})
        invoice.status, invoice.paid_at, invoice.payment_reference = Invoice.Status.PAID, paid_at or timezone.now(), reference[:200]
        invoice.save(update_fields=["status", "paid_at", "payment_reference"])
        audit_record(tenant_id=tenant_id, action="billing.invoice_paid", user=actor_user(by), api_key=actor_api_key(by),
                     target=invoice, data={"number": invoice.number, "reference": reference[:200]})
    return invoice


def invoice_void(*, tenant_id: UUID | str, invoice_id: UUID | str, reason: str, by: Any = None) -> Invoice:
    """Voids an open invoice and returns its credit; the period can then be closed again."""
    with tenant_atomic(tenant_id):
        invoice = _invoice_locked(tenant_id, invoice_id)
        if invoice.status == Invoice.Status.VOID:
            return invoice
        if invoice.status != Invoice.Status.OPEN:
            raise Conflict(f"A {invoice.status} invoice cannot be voided.", details={"status": invoice.status})
        CreditApplication.objects.filter(invoice=invoice).delete()
        invoice.status, invoice.voided_at = Invoice.Status.VOID, timezone.now()
        invoice.save(update_fields=["status", "voided_at"])
        audit_record(tenant_id=tenant_id, action="billing.invoice_voided", user=actor_user(by), api_key=actor_api_key(by),
                     target=invoice, data={"number": invoice.number, "reason": reason[:200]})
    return invoice


def _invoice_locked(tenant_id: UUID | str, invoice_id: UUID | str) -> Invoice:
    try:
        return Invoice.objects.select_for_update().get(id=invoice_id)
    except (Invoice.DoesNotExist, DjangoValidationError, ValueError):
        raise NotFound("No such invoice.") from None


def periods_close_due(*, now: datetime | None = None) -> dict[str, int]:
    """The periodic close: for every tenant with a billing account, closes the last finished
    month once the grace period after its end has passed. Safe to run any number of times."""
    now = now or timezone.now()
    period_end, _ = selectors.period_bounds(now)
    if now < period_end + timedelta(seconds=settings.BILLING_CLOSE_GRACE_SECONDS):
        return {"closed": 0, "failed": 0}
    previous_start, _ = selectors.period_bounds(period_end - timedelta(seconds=1))
    tenant_ids = list(dangerously_all_tenants(BillingAccount).values_list("tenant_id", flat=True))
    closed = failed = 0
    for tenant_id in tenant_ids:
        try:
            invoice_close(tenant_id=tenant_id, period_start=previous_start, now=now)
            closed += 1
        except Exception:  # one tenant's failure must not stop everyone else's invoices
            failed += 1
            logger.exception("closing %s for tenant %s failed", selectors.period_label(previous_start), tenant_id)
    return {"closed": closed, "failed": failed}
