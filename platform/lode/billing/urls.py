from django.urls import path

from . import api

app_name = "billing"

urlpatterns = [
    path("billing/account", api.AccountApi.as_view(), name="account"),
    path("billing/meters", api.MeterListApi.as_view(), name="meter-list"),
    path("billing/plans", api.PlanListApi.as_view(), name="plan-list"),
    path("billing/subscription", api.SubscriptionApi.as_view(), name="subscription"),
    path("billing/usage", api.UsageSummaryApi.as_view(), name="usage"),
    path("billing/usage/daily", api.UsageDailyApi.as_view(), name="usage-daily"),
    path("billing/quotas", api.QuotaListCreateApi.as_view(), name="quota-list"),
    path("billing/quotas/<int:quota_id>", api.QuotaDetailApi.as_view(), name="quota-detail"),
    path("billing/credits", api.CreditsApi.as_view(), name="credits"),
    path("billing/estimate", api.EstimateApi.as_view(), name="estimate"),
    path("billing/invoices", api.InvoiceListApi.as_view(), name="invoice-list"),
    path("billing/invoices/<uuid:invoice_id>", api.InvoiceDetailApi.as_view(), name="invoice-detail"),
    path("billing/invoices/<uuid:invoice_id>/html", api.InvoiceHtmlApi.as_view(), name="invoice-html"),
    path("billing/invoices/<uuid:invoice_id>/pdf", api.InvoicePdfApi.as_view(), name="invoice-pdf"),
    path("billing/stripe/webhook", api.StripeWebhookApi.as_view(), name="stripe-webhook"),
]
