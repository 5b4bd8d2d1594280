"""Staff tools: plans and prices, each tenant's account (tax rate, limits), credits, and invoices
(mark paid when Stripe is not used, void). Tenant rows are read through the system role
(dangerously_all_tenants) because staff look across tenants; every write goes through a service."""
from django.contrib import admin, messages

from lode.core.errors import LodeError
from tenants.db_context import dangerously_all_tenants, tenant_atomic

from . import services
from .models import BillingAccount, CreditGrant, Invoice, Plan, PlanPrice, PlanVersion, UsageEvent


class PlanPriceInline(admin.TabularInline):
    model = PlanPrice
    extra = 0


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "currency", "is_public", "is_prepaid")


@admin.register(PlanVersion)
class PlanVersionAdmin(admin.ModelAdmin):
    """A version is written once; new prices are a new version (subscriptions keep theirs)."""

    list_display = ("plan", "version", "base_fee_minor", "created_at")
    inlines = [PlanPriceInline]

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False


class CrossTenantAdmin(admin.ModelAdmin):
    def get_queryset(self, request):
        return dangerously_all_tenants(self.model)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(BillingAccount)
class BillingAccountAdmin(CrossTenantAdmin):
    list_display = ("tenant_id", "currency", "tax_rate", "billing_email", "spend_limit_minor", "closed_through")
    readonly_fields = ("tenant", "closed_through", "stripe_customer_id", "created_at")
    fields = ("tenant", "currency", "tax_rate", "tax_label", "billing_email", "spend_limit_minor",
              "soft_spend_limit_minor", "closed_through", "stripe_customer_id", "created_at")

    def save_model(self, request, obj, form, change):
        with tenant_atomic(obj.tenant_id):
            obj.save(using="default")


@admin.register(CreditGrant)
class CreditGrantAdmin(CrossTenantAdmin):
    list_display = ("tenant_id", "amount_minor", "currency", "reason", "granted_at", "expires_at")

    def has_change_permission(self, request, obj=None):
        return obj is None


@admin.register(UsageEvent)
class UsageEventAdmin(CrossTenantAdmin):
    list_display = ("tenant_id", "meter", "dimension", "quantity", "accounted_at", "source_type", "source_id")
    list_filter = ("meter",)

    def has_change_permission(self, request, obj=None):
        return obj is None


@admin.register(Invoice)
class InvoiceAdmin(CrossTenantAdmin):
    list_display = ("number", "tenant_id", "status", "period_start", "total_minor", "currency", "issued_at", "paid_at")
    list_filter = ("status",)
    actions = ["mark_paid", "void"]

    def has_change_permission(self, request, obj=None):
        return obj is None

    @admin.action(description="Mark paid (payment received outside Stripe)")
    def mark_paid(self, request, queryset):
        self._each(request, queryset, lambda invoice: services.invoice_mark_paid(
            tenant_id=invoice.tenant_id, invoice_id=invoice.id, reference=f"marked paid by {request.user.email}", by=request.user))

    @admin.action(description="Void")
    def void(self, request, queryset):
        self._each(request, queryset, lambda invoice: services.invoice_void(
            tenant_id=invoice.tenant_id, invoice_id=invoice.id, reason=f"voided by {request.user.email}", by=request.user))

    def _each(self, request, queryset, action) -> None:
        done = 0
        for invoice in queryset:
            try:
                action(invoice)
                done += 1
            except LodeError as exc:
                self.message_user(request, f"{invoice}: {exc.message}", messages.ERROR)
        if done:
            self.message_user(request, f"{done} invoice(s) updated.", messages.SUCCESS)
