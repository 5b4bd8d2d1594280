"""Billing API: the account, plans and plan changes, usage so far with a forecast, quotas,
credits, cost estimates (402 when work would not fit), invoices with HTML/PDF renderings, and the
Stripe webhook."""
from __future__ import annotations

from datetime import datetime

from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from lode.core.errors import ValidationFailed
from tenants.context import request_actor
from tenants.db_context import tenant_atomic
from tenants.scoping import TenantScopedMixin

from . import selectors, services
from .meters import METERS
from .models import Invoice, Quota, Subscription
from .serializers import (
    AccountOutput,
    AccountUpdateInput,
    CreditsOutput,
    EstimateInput,
    EstimateOutput,
    InvoiceDetailOutput,
    InvoiceOutput,
    MeterOutput,
    PlanOutput,
    QuotaInput,
    QuotaOutput,
    SubscriptionChangeInput,
    SubscriptionOutput,
    UsageDayOutput,
    UsageSummaryOutput,
)


def _ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _period(request) -> tuple[datetime, datetime, bool]:
    """?period=YYYY-MM (the current month when omitted)."""
    now = timezone.now()
    current = selectors.period_bounds(now)
    value = request.query_params.get("period")
    if not value:
        return (*current, True)
    try:
        start, end = selectors.period_parse(value)
    except ValueError:
        raise ValidationFailed("period: expected YYYY-MM", details={"field": "period"}) from None
    if start > now:
        raise ValidationFailed("period: in the future", details={"field": "period"})
    return start, end, start == current[0]


class BillingApiMixin(TenantScopedMixin):
    required_area = "billing"


class AccountApi(BillingApiMixin, APIView):
    def _body(self) -> dict:
        tenant_id = self.tenant.id
        account = services.account_ensure(tenant_id=tenant_id)
        now = timezone.now()
        current = selectors.subscription_current(tenant_id=tenant_id, at=now)
        with tenant_atomic(tenant_id):
            upcoming = Subscription.objects.select_related("plan_version__plan").filter(starts_at__gt=now).order_by("starts_at").first()
        return {
            "currency": account.currency, "tax_rate": account.tax_rate, "tax_label": account.tax_label,
            "billing_email": account.billing_email, "spend_limit_minor": account.spend_limit_minor,
            "soft_spend_limit_minor": account.soft_spend_limit_minor,
            "credit_balance_minor": selectors.credit_balance(tenant_id=tenant_id),
            "stripe_connected": bool(account.stripe_customer_id), "subscription": current, "next_subscription": upcoming,
        }

    @extend_schema(responses=AccountOutput)
    def get(self, request):
        return Response(AccountOutput(self._body()).data)

    @extend_schema(request=AccountUpdateInput, responses=AccountOutput)
    def patch(self, request):
        data = AccountUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if not values:
            raise ValidationFailed("Nothing to change: give billing_email, spend_limit_minor or soft_spend_limit_minor.")
        account = services.account_ensure(tenant_id=self.tenant.id)
        if "billing_email" in values:
            services.billing_email_set(tenant_id=self.tenant.id, email=values["billing_email"], by=request_actor(request), ip=_ip(request))
        if "spend_limit_minor" in values or "soft_spend_limit_minor" in values:
            services.spend_limits_set(
                tenant_id=self.tenant.id,
                hard_minor=values.get("spend_limit_minor", account.spend_limit_minor),
                soft_minor=values.get("soft_spend_limit_minor", account.soft_spend_limit_minor),
                by=request_actor(request), ip=_ip(request),
            )
        return Response(AccountOutput(self._body()).data)


class MeterListApi(APIView):
    required_area = "billing"
    pagination_class = None

    @extend_schema(responses=MeterOutput(many=True))
    def get(self, request):
        return Response(MeterOutput(list(METERS.values()), many=True).data)


class PlanListApi(APIView):
    required_area = "billing"
    pagination_class = None

    @extend_schema(responses=PlanOutput(many=True))
    def get(self, request):
        plans = [{"plan": plan, "version": version, "terms": selectors.plan_terms(version.id)}
                 for plan, version in selectors.plan_list_public()]
        return Response(PlanOutput(plans, many=True).data)


class SubscriptionApi(BillingApiMixin, APIView):
    @extend_schema(request=SubscriptionChangeInput, responses={201: SubscriptionOutput})
    def post(self, request):
        data = SubscriptionChangeInput(data=request.data)
        data.is_valid(raise_exception=True)
        subscription = services.subscription_change(
            tenant_id=self.tenant.id, plan_code=data.validated_data["plan"],
            effective_at=data.validated_data["effective_at"], by=request_actor(request), ip=_ip(request),
        )
        with tenant_atomic(self.tenant.id):
            subscription = Subscription.objects.select_related("plan_version__plan").get(id=subscription.id)
        return Response(SubscriptionOutput(subscription).data, status=status.HTTP_201_CREATED)


class UsageSummaryApi(BillingApiMixin, APIView):
    """The period's usage and its cost; for the current period, cost so far and a forecast."""

    @extend_schema(parameters=[OpenApiParameter("period", str, description="YYYY-MM; the current month when omitted")],
                   responses=UsageSummaryOutput)
    def get(self, request):
        start, end, is_current = _period(request)
        account = services.account_ensure(tenant_id=self.tenant.id)
        if is_current:
            summary = selectors.period_summary(tenant_id=self.tenant.id)
            lines, cost, forecast = summary.lines, summary.cost_so_far_minor, summary.forecast_minor
        else:
            lines = selectors.rate_usage(tenant_id=self.tenant.id, start=start, end=end)
            cost, forecast = sum(line.amount_minor for line in lines), None
        totals: dict[tuple[str, str], object] = {}
        for line in lines:
            if line.kind == "usage":
                key = (line.meter, line.dimension)
                totals[key] = totals.get(key, 0) + line.quantity
        usage = [{"meter": meter, "dimension": dimension, "unit": METERS[meter].unit, "quantity": quantity}
                 for (meter, dimension), quantity in sorted(totals.items())]
        body = {"period": selectors.period_label(start), "period_start": start, "period_end": end,
                "currency": account.currency, "is_current": is_current, "usage": usage, "lines": lines,
                "cost_so_far_minor": cost, "forecast_minor": forecast}
        return Response(UsageSummaryOutput(body).data)


class UsageDailyApi(BillingApiMixin, APIView):
    pagination_class = None

    @extend_schema(parameters=[OpenApiParameter("period", str, description="YYYY-MM; the current month when omitted")],
                   responses=UsageDayOutput(many=True))
    def get(self, request):
        start, end, _ = _period(request)
        return Response(UsageDayOutput(selectors.usage_daily(tenant_id=self.tenant.id, start=start, end=end), many=True).data)


class QuotaListCreateApi(BillingApiMixin, generics.GenericAPIView):
    serializer_class = QuotaOutput
    pagination_class = None

    def safely_get_queryset(self):
        return Quota.objects.order_by("meter", "dimension", "kind")

    @extend_schema(responses=QuotaOutput(many=True))
    def get(self, request):
        return Response(QuotaOutput(self.get_queryset(), many=True).data)

    @extend_schema(request=QuotaInput, responses={201: QuotaOutput})
    def post(self, request):
        data = QuotaInput(data=request.data)
        data.is_valid(raise_exception=True)
        quota = services.quota_set(tenant_id=self.tenant.id, **data.validated_data, by=request_actor(request), ip=_ip(request))
        return Response(QuotaOutput(quota).data, status=status.HTTP_201_CREATED)


class QuotaDetailApi(BillingApiMixin, generics.GenericAPIView):
    serializer_class = QuotaOutput
    lookup_url_kwarg = "quota_id"

    def safely_get_queryset(self):
        return Quota.objects.all()

    @extend_schema(responses={204: None})
    def delete(self, request, quota_id):
        quota = self.get_object()
        services.quota_delete(tenant_id=self.tenant.id, quota_id=quota.id, by=request_actor(request), ip=_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class CreditsApi(BillingApiMixin, APIView):
    @extend_schema(responses=CreditsOutput)
    def get(self, request):
        account = services.account_ensure(tenant_id=self.tenant.id)
        body = {"balance_minor": selectors.credit_balance(tenant_id=self.tenant.id), "currency": account.currency,
                "grants": selectors.credit_grant_list(tenant_id=self.tenant.id)}
        return Response(CreditsOutput(body).data)


class EstimateApi(BillingApiMixin, APIView):
    """Would this usage fit? 200 with the estimated cost and what remains, or 402 with the
    numbers. Reads only (nothing is reserved), so it needs billing:read."""

    @extend_schema(request=EstimateInput, responses={200: EstimateOutput})
    def post(self, request):
        data = EstimateInput(data=request.data)
        data.is_valid(raise_exception=True)
        admission = services.usage_admit(
            tenant_id=self.tenant.id,
            estimate=[services.UsageEstimate(**item) for item in data.validated_data["usage"]],
        )
        return Response(EstimateOutput(admission).data)


class InvoiceListApi(BillingApiMixin, generics.ListAPIView):
    serializer_class = InvoiceOutput

    def safely_get_queryset(self):
        return Invoice.objects.all()


class InvoiceDetailApi(BillingApiMixin, generics.RetrieveAPIView):
    serializer_class = InvoiceDetailOutput
    lookup_url_kwarg = "invoice_id"

    def safely_get_queryset(self):
        return Invoice.objects.prefetch_related("lines")


class InvoiceHtmlApi(BillingApiMixin, generics.GenericAPIView):
    lookup_url_kwarg = "invoice_id"

    def safely_get_queryset(self):
        return Invoice.objects.all()

    @extend_schema(responses={(200, "text/html"): str})
    def get(self, request, invoice_id):
        from .rendering import invoice_html

        invoice = self.get_object()
        response = HttpResponse(invoice_html(tenant_id=self.tenant.id, invoice_id=invoice.id), content_type="text/html; charset=utf-8")
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return response


class InvoicePdfApi(BillingApiMixin, generics.GenericAPIView):
    lookup_url_kwarg = "invoice_id"

    def safely_get_queryset(self):
        return Invoice.objects.all()

    @extend_schema(responses={(200, "application/pdf"): bytes})
    def get(self, request, invoice_id):
        from .rendering import invoice_pdf

        invoice = self.get_object()
        response = HttpResponse(invoice_pdf(tenant_id=self.tenant.id, invoice_id=invoice.id), content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{invoice.number or invoice.id}.pdf"'
        response["X-Content-Type-Options"] = "nosniff"
        return response


class StripeWebhookApi(APIView):
    """Stripe's calls: no session or API key; the signature over the raw body is the proof."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AnonRateThrottle]
    parser_classes: list = []

    @extend_schema(request=None, responses={200: dict})
    def post(self, request):
        from .stripe_sync import webhook_process

        result = webhook_process(payload=request.body, signature=request.META.get("HTTP_STRIPE_SIGNATURE"))
        return Response(result)
