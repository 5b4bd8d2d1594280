"""Dashboard billing pages: the current period (usage, cost so far, forecast, a chart of daily
usage), plan, credit, quotas and spend limits; the plans on offer and the plan change; invoices
with their HTML and PDF downloads.

Reads go through lode.billing.selectors, writes through lode.billing.services, documents through
lode.billing.rendering. The pages show plain values the view prepares (money as text from integer
minor units); no template does arithmetic on money. Reading needs billing:read, changing
billing:write (tenants.permissions: owners and the billing role write, admins read)."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from lode.billing import rendering, selectors, services
from lode.billing.meters import METERS
from lode.core.errors import LodeError, ValidationFailed
from tenants.db_context import tenant_atomic

from .forms import form_error_from
from .views import TenantActionView, TenantFormPageView, _ip

INVOICES_SHOWN = 120

QUOTA_KINDS = [("hard", "Hard: refuse work past it"), ("soft", "Soft: notify once a period")]
PLAN_WHEN = [("now", "Now (both plans are prorated for this month)"), ("next_period", "At the start of next month")]


def _dimension_choices() -> list:
    """Blank (the meter's total) and every meter's dimensions, grouped by what they name; the
    service checks that the one picked belongs to the meter."""
    groups: dict[str, list[str]] = {}
    for meter in METERS.values():
        if meter.dimension_name:
            names = groups.setdefault(meter.dimension_name.replace("_", " ").capitalize(), [])
            names += [name for name in meter.dimensions if name not in names]
    return [("", "All (the meter's total)")] + [(group, [(name, name) for name in names]) for group, names in groups.items()]


# --- Forms (input shapes only; the services do the real checks) --------------------------------


class QuotaForm(forms.Form):
    meter = forms.ChoiceField(label="Meter", choices=[(name, name) for name in METERS])
    dimension = forms.ChoiceField(label="Dimension", choices=_dimension_choices, required=False)
    kind = forms.ChoiceField(label="Kind", choices=QUOTA_KINDS)
    limit = forms.DecimalField(label="Limit per month", min_value=0, max_digits=24, decimal_places=6)


class SpendLimitsForm(forms.Form):
    """Limits in major units of the account's currency (dollars, with at most its minor-unit
    digits); the service stores them as minor units. Empty: no limit."""

    HELP = {
        "hard": "Work that would take the month's cost past it is refused. Empty: no limit.",
        "soft": "Crossing it notifies the billing contact. Empty: no limit.",
    }

    def __init__(self, *args: Any, currency: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.exponent = rendering.currency_exponent(currency)
        for name, label in (("hard", "Hard limit per month"), ("soft", "Soft limit per month")):
            # Built here: a DecimalField's digit checks are fixed when it is made.
            self.fields[name] = forms.DecimalField(
                label=f"{label} ({currency})", required=False, min_value=0, max_digits=17, decimal_places=self.exponent,
                help_text=self.HELP[name],
            )

    def minor(self, name: str) -> int | None:
        value: Decimal | None = self.cleaned_data.get(name)
        return None if value is None else int(value.scaleb(self.exponent))


class PlanChangeForm(forms.Form):
    plan = forms.ChoiceField(label="Plan")
    when = forms.ChoiceField(label="When", choices=PLAN_WHEN, initial="now")

    def __init__(self, *args: Any, plan_codes: list[str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["plan"].choices = [(code, code) for code in plan_codes]


# --- Plain values for the pages --------------------------------------------------------------------


def _minor_as_major(amount_minor: int | None, currency: str) -> Decimal | None:
    if amount_minor is None:
        return None
    return Decimal(amount_minor).scaleb(-rendering.currency_exponent(currency))


def usage_chart(*, daily: list[dict], start: datetime, end: datetime) -> dict[str, Any]:
    """Chart.js data for the period so far: one label per day from `start` through `end`'s day,
    one dataset per meter (all dimensions together), zero on days without usage. Quantities
    become floats here, for drawing only; every amount shown as text stays exact."""
    first: date = start.date()
    days = [first + timedelta(days=offset) for offset in range((end.date() - first).days + 1)]
    quantities = {(row["day"], row["meter"]): row["quantity"] for row in daily}
    meters = sorted({row["meter"] for row in daily})
    return {
        "labels": [day.isoformat() for day in days],
        "datasets": [
            {
                "label": selectors.meter_label(meter, ""),
                "meter": meter,
                "data": [float(quantities.get((day, meter), 0)) for day in days],
            }
            for meter in meters
        ],
    }


def _matching_usage(usage: dict[tuple[str, str], Decimal], meter: str, dimension: str) -> Decimal:
    """A quota's usage: its meter over every dimension, or the one dimension it names."""
    return sum((quantity for (used_meter, used_dimension), quantity in usage.items()
                if used_meter == meter and (not dimension or used_dimension == dimension)), Decimal(0))


def _quota_rows(quotas: list, usage: dict[tuple[str, str], Decimal]) -> list[dict[str, Any]]:
    rows = []
    for quota in quotas:
        used = _matching_usage(usage, quota.meter, quota.dimension)
        share = None if quota.limit <= 0 else min(used / quota.limit, Decimal(1))
        rows.append({
            "id": quota.id,
            "label": selectors.meter_label(quota.meter, quota.dimension),
            "meter": quota.meter,
            "dimension": quota.dimension,
            "kind": quota.kind,
            "kind_label": quota.get_kind_display(),
            "limit": rendering.quantity_format(quota.limit),
            "used": rendering.quantity_format(used),
            "fraction": float(share) if share is not None else (1.0 if used > 0 else 0.0),
            "reached": used >= quota.limit,
        })
    return rows


def _summary_lines(lines: list, currency: str) -> list[dict[str, Any]]:
    return [
        {
            "kind": line.kind,
            "description": line.description,
            "quantity": rendering.quantity_format(line.quantity) if line.kind == "usage" else "",
            "included": rendering.quantity_format(line.included_quantity) if line.kind == "usage" else "",
            "billable": rendering.quantity_format(line.billable_quantity) if line.kind == "usage" else "",
            "amount": rendering.money_format(line.amount_minor, currency),
        }
        for line in lines
    ]


def _plan_changes_ahead(*, tenant_id: UUID | str, now: datetime) -> list[dict[str, Any]]:
    """Plan changes scheduled after now (through the end of next month): the subscription
    segments that start later than now."""
    _, period_end = selectors.period_bounds(now)
    _, horizon = selectors.period_bounds(period_end)
    return [
        {"plan_version_id": segment.plan_version_id, "plan_name": selectors.plan_terms(segment.plan_version_id).plan_name,
         "starts_at": segment.start}
        for segment in selectors.subscription_segments(tenant_id=tenant_id, start=now, end=horizon)
        if segment.start > now
    ]


def _tier_texts(price, currency: str) -> list[str]:
    """A price's graduated tiers, readably: "$0.15 per 1,000,000 tokens for the first 500,000,000
    tokens", "then $0.10 per 1,000,000 tokens" (tiers count the quantity past the allowance;
    bounds are in the unit the price is quoted in: "the first 100 GPU-hours")."""
    texts = []
    per = rendering.price_unit_text(price.meter, price.price_unit)
    for index, (up_to, unit_price) in enumerate(price.tiers):
        cost = "free" if unit_price == 0 else f"{rendering.money_format(unit_price, currency, exact=True)} per {per}"
        bound = "" if up_to is None else rendering.quantity_in_price_units(price.meter, up_to, price.price_unit)
        if len(price.tiers) == 1:
            texts.append(cost)
        elif up_to is None:
            texts.append(f"then {cost}")
        elif index == 0:
            texts.append(f"{cost} for the first {bound}")
        else:
            texts.append(f"then {cost} up to {bound}")
    return texts


def _price_groups(terms, currency: str) -> list[dict[str, Any]]:
    """A plan version's prices grouped by meter (in catalogue order), each meter titled by what
    it measures; a meter priced per dimension (GPU class) has a row per dimension."""
    groups: dict[str, dict[str, Any]] = {}
    for price in terms.prices:
        meter = METERS.get(price.meter)
        dimension_name = meter.dimension_name.replace("_", " ") if meter is not None else ""
        group = groups.setdefault(price.meter, {
            "meter": price.meter, "title": meter.description if meter is not None else price.meter,
            "unit": rendering.unit_plural(price.meter), "dimension_name": dimension_name, "rows": [],
        })
        if price.dimension:
            label = price.dimension
        elif dimension_name:
            label = f"any {dimension_name}"  # one price for every dimension without its own
        else:
            label = ""
        group["rows"].append({
            "dimension": price.dimension, "label": label,
            "included": (rendering.quantity_in_price_units(price.meter, price.included_quantity, price.price_unit)
                         if price.included_quantity > 0 else ""),
            "tiers": _tier_texts(price, currency),
        })
    order = list(METERS)
    return sorted(groups.values(), key=lambda group: order.index(group["meter"]) if group["meter"] in order else len(order))


# --- Pages ----------------------------------------------------------------------------------------


class BillingPageView(TenantFormPageView):
    nav_active = "billing"
    read_permission = "billing:read"
    write_permission = "billing:write"
    manage_permission = "billing:write"
    billing_tab = ""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(billing_tab=self.billing_tab, can_manage=self.can("billing:write"))
        return context

class BillingOverviewView(BillingPageView):
    """The current period, plan, credit, quotas and spend limits. Both forms post here, told
    apart by their `form` field."""

    template_name = "dashboard/billing/overview.html"
    billing_tab = "overview"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        tenant_id = self.tenant.id
        now = timezone.now()
        summary = selectors.period_summary(tenant_id=tenant_id, at=now)
        currency = summary.currency
        usage = selectors.usage_totals(tenant_id=tenant_id, start=summary.period_start, end=now)
        daily = selectors.usage_daily(tenant_id=tenant_id, start=summary.period_start, end=now)
        account = selectors.account_get(tenant_id=tenant_id)
        subscription = selectors.subscription_current(tenant_id=tenant_id, at=now)
        grants = selectors.credit_grant_list(tenant_id=tenant_id)
        context.update(
            currency=currency,
            period_label=selectors.period_label(summary.period_start),
            period_start=summary.period_start,
            period_last_day=summary.period_end - timedelta(seconds=1),
            cost_so_far=rendering.money_format(summary.cost_so_far_minor, currency),
            forecast=rendering.money_format(summary.forecast_minor, currency),
            lines=_summary_lines(summary.lines, currency),
            usage_chart=usage_chart(daily=daily, start=summary.period_start, end=now),
            has_usage=bool(daily),
            subscription=subscription,
            plan_name=subscription.plan_version.plan.name if subscription else "",
            plan_changes=_plan_changes_ahead(tenant_id=tenant_id, now=now),
            credit_balance=rendering.money_format(selectors.credit_balance(tenant_id=tenant_id, at=now), currency),
            grants=[
                {"reason": row["grant"].reason, "granted_at": row["grant"].granted_at, "expires_at": row["grant"].expires_at,
                 "amount": rendering.money_format(row["grant"].amount_minor, row["grant"].currency),
                 "remaining": rendering.money_format(row["remaining_minor"], row["grant"].currency),
                 "expired": row["grant"].expires_at is not None and row["grant"].expires_at <= now}
                for row in grants
            ],
            quotas=_quota_rows(selectors.quota_list(tenant_id=tenant_id), usage),
            spend_limit=(rendering.money_format(account.spend_limit_minor, currency)
                         if account.spend_limit_minor is not None else ""),
            soft_spend_limit=(rendering.money_format(account.soft_spend_limit_minor, currency)
                              if account.soft_spend_limit_minor is not None else ""),
        )
        context.setdefault("quota_form", QuotaForm())
        context.setdefault("spend_limits_form", SpendLimitsForm(currency=currency, initial={
            "hard": _minor_as_major(account.spend_limit_minor, currency),
            "soft": _minor_as_major(account.soft_spend_limit_minor, currency),
        }))
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        which = request.POST.get("form")
        if which == "quota":
            return self._quota_set(request)
        if which == "spend-limits":
            return self._spend_limits_set(request)
        raise ValidationFailed("form: unknown form; post the quota form or the spend limits form.")

    def _quota_set(self, request: HttpRequest) -> HttpResponse:
        form = QuotaForm(request.POST)
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.quota_set(
                    tenant_id=self.tenant.id, meter=data["meter"], dimension=data["dimension"] or "", kind=data["kind"],
                    limit=data["limit"], by=self.access.user, ip=_ip(request),
                )
            except LodeError as exc:
                form_error_from(form, exc)
                status = exc.http_status
            else:
                label = selectors.meter_label(data["meter"], data["dimension"] or "")
                messages.success(request, f"{data['kind'].capitalize()} quota on {label} set to "
                                          f"{rendering.quantity_format(data['limit'])} per month.")
                return redirect("dashboard:billing")
        return self.render_invalid(status, quota_form=form)

    def _spend_limits_set(self, request: HttpRequest) -> HttpResponse:
        currency = selectors.account_get(tenant_id=self.tenant.id).currency
        form = SpendLimitsForm(request.POST, currency=currency)
        status = 400
        if form.is_valid():
            try:
                services.spend_limits_set(
                    tenant_id=self.tenant.id, hard_minor=form.minor("hard"), soft_minor=form.minor("soft"),
                    by=self.access.user, ip=_ip(request),
                )
            except LodeError as exc:
                form_error_from(form, exc, aliases={"spend_limit_minor": "hard", "soft_spend_limit_minor": "soft"})
                status = exc.http_status
            else:
                messages.success(request, "Spend limits saved.")
                return redirect("dashboard:billing")
        return self.render_invalid(status, spend_limits_form=form)


class QuotaDeleteView(TenantActionView):
    write_permission = "billing:write"
    redirect_to = "dashboard:billing"

    def act(self, request: HttpRequest, **kwargs: Any) -> str:
        services.quota_delete(tenant_id=self.tenant.id, quota_id=kwargs["quota_id"], by=self.access.user, ip=_ip(request))
        return "Quota removed."


class BillingPlansView(BillingPageView):
    """The public plans with their allowances and prices; the tenant's plan marked; a change now
    (prorated) or from the start of next month."""

    template_name = "dashboard/billing/plans.html"
    billing_tab = "plans"

    def _public_plans(self) -> list[tuple]:
        return selectors.plan_list_public()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        now = timezone.now()
        selectors.account_get(tenant_id=self.tenant.id)  # a first visit opens the account on the default plan
        subscription = selectors.subscription_current(tenant_id=self.tenant.id, at=now)
        changes = _plan_changes_ahead(tenant_id=self.tenant.id, now=now)
        scheduled = {change["plan_version_id"]: change["starts_at"] for change in changes}
        _, next_period = selectors.period_bounds(now)
        plans = []
        public_plan_ids = set()
        for plan, version in self._public_plans():
            public_plan_ids.add(plan.id)
            terms = selectors.plan_terms(version.id)
            is_current = subscription is not None and subscription.plan_version.plan_id == plan.id
            plans.append({
                "code": plan.code,
                "name": plan.name,
                "description": plan.description,
                "currency": plan.currency,
                "is_prepaid": plan.is_prepaid,
                "base_fee": rendering.money_format(version.base_fee_minor, plan.currency),
                "has_base_fee": version.base_fee_minor > 0,
                "version": version.version,
                "price_groups": _price_groups(terms, plan.currency),
                "is_current": is_current,
                # On the plan, but on an older version of its prices.
                "is_outdated": is_current and subscription.plan_version_id != version.id,
                "scheduled_from": scheduled.get(version.id),
            })
        context.update(
            plans=plans,
            subscription=subscription,
            current_is_private=subscription is not None and subscription.plan_version.plan_id not in public_plan_ids,
            plan_changes=changes,
            next_period=next_period,
        )
        context.setdefault("change_form", None)
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        codes = [plan.code for plan, _ in self._public_plans()]
        form = PlanChangeForm(request.POST, plan_codes=codes)
        status = 400
        if form.is_valid():
            effective_at = None
            if form.cleaned_data["when"] == "next_period":
                _, effective_at = selectors.period_bounds(timezone.now())
            try:
                subscription = services.subscription_change(
                    tenant_id=self.tenant.id, plan_code=form.cleaned_data["plan"], effective_at=effective_at,
                    by=self.access.user, ip=_ip(request),
                )
            except LodeError as exc:
                form_error_from(form, exc)
                status = exc.http_status
            else:
                name = subscription.plan_version.plan.name
                if effective_at is None:
                    messages.success(request, f"You are on the {name} plan from now on.")
                else:
                    messages.success(request, f"You move to the {name} plan on {effective_at:%Y-%m-%d} (UTC).")
                return redirect("dashboard:billing-plans")
        return self.render_invalid(status, change_form=form)


class InvoiceListView(BillingPageView):
    template_name = "dashboard/billing/invoices.html"
    billing_tab = "invoices"
    write_permission = None  # read only: a POST is refused

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        with tenant_atomic(self.tenant.id):
            invoices = list(selectors.invoice_list(tenant_id=self.tenant.id)[:INVOICES_SHOWN])
        context["invoices"] = [
            {
                "id": invoice.id,
                "number": invoice.number or "Draft",
                "period": selectors.period_label(invoice.period_start),
                "status": invoice.status,
                "status_label": invoice.get_status_display(),
                "issued_at": invoice.issued_at,
                "total": rendering.money_format(invoice.total_minor, invoice.currency),
                "html_url": reverse("dashboard:billing-invoice-html", kwargs={"invoice_id": invoice.id}),
                "pdf_url": reverse("dashboard:billing-invoice-pdf", kwargs={"invoice_id": invoice.id}),
            }
            for invoice in invoices
        ]
        context["limit"] = INVOICES_SHOWN
        return context


class InvoiceDownloadView(BillingPageView):
    """One invoice as a document. Another tenant's invoice and a missing one are the same 404
    (rendering raises NotFound; the base view renders it)."""

    http_method_names = ["get", "head"]
    write_permission = None

    def document_response(self, document: rendering.InvoiceDocument) -> HttpResponse:
        raise NotImplementedError

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        document = rendering.invoice_document(tenant_id=self.tenant.id, invoice_id=kwargs["invoice_id"])
        response = self.document_response(document)
        response["X-Content-Type-Options"] = "nosniff"
        add_never_cache_headers(response)  # an invoice is nobody's but the tenant's: no shared cache keeps it
        return response


class InvoiceHtmlView(InvoiceDownloadView):
    def document_response(self, document: rendering.InvoiceDocument) -> HttpResponse:
        response = HttpResponse(rendering.invoice_html_render(document), content_type="text/html; charset=utf-8")
        response["Content-Disposition"] = f'inline; filename="{rendering.invoice_filename(document, "html")}"'
        # The page carries the tenant's own text: it may load nothing and run nothing.
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        return response


class InvoicePdfView(InvoiceDownloadView):
    def document_response(self, document: rendering.InvoiceDocument) -> HttpResponse:
        response = HttpResponse(rendering.invoice_pdf_render(document), content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{rendering.invoice_filename(document, "pdf")}"'
        return response
