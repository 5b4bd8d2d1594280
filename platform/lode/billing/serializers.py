"""Input and output shapes of the billing API. No logic: services and selectors do the work.
Money is integer minor units with a currency; quantities are decimal strings."""
from rest_framework import serializers

from .meters import METERS
from .models import CreditGrant, Invoice, InvoiceLine, Quota

DECIMAL = {"max_digits": 24, "decimal_places": 6, "coerce_to_string": True}


class MeterOutput(serializers.Serializer):
    name = serializers.CharField()
    unit = serializers.CharField()
    description = serializers.CharField()
    dimension_name = serializers.CharField()
    dimensions = serializers.ListField(child=serializers.CharField())


class PriceOutput(serializers.Serializer):
    meter = serializers.CharField()
    dimension = serializers.CharField()
    included_quantity = serializers.DecimalField(**DECIMAL)
    price_unit = serializers.IntegerField()
    tiers = serializers.SerializerMethodField()

    def get_tiers(self, price) -> list[dict]:
        return [{"up_to": None if up_to is None else str(up_to), "unit_price": str(unit_price)} for up_to, unit_price in price.tiers]


class PlanOutput(serializers.Serializer):
    code = serializers.CharField(source="plan.code")
    name = serializers.CharField(source="plan.name")
    description = serializers.CharField(source="plan.description")
    currency = serializers.CharField(source="plan.currency")
    is_prepaid = serializers.BooleanField(source="plan.is_prepaid")
    version = serializers.IntegerField(source="version.version")
    base_fee_minor = serializers.IntegerField(source="version.base_fee_minor")
    prices = PriceOutput(many=True, source="terms.prices")


class SubscriptionOutput(serializers.Serializer):
    id = serializers.IntegerField()
    plan = serializers.CharField(source="plan_version.plan.code")
    plan_name = serializers.CharField(source="plan_version.plan.name")
    plan_version = serializers.IntegerField(source="plan_version.version")
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField(allow_null=True)


class SubscriptionChangeInput(serializers.Serializer):
    plan = serializers.SlugField(max_length=40)
    effective_at = serializers.DateTimeField(required=False, allow_null=True, default=None,
                                             help_text="When the change takes effect; now when omitted.")


class AccountOutput(serializers.Serializer):
    currency = serializers.CharField()
    tax_rate = serializers.DecimalField(max_digits=6, decimal_places=4, coerce_to_string=True)
    tax_label = serializers.CharField()
    billing_email = serializers.EmailField(allow_blank=True)
    spend_limit_minor = serializers.IntegerField(allow_null=True)
    soft_spend_limit_minor = serializers.IntegerField(allow_null=True)
    credit_balance_minor = serializers.IntegerField()
    stripe_connected = serializers.BooleanField()
    subscription = SubscriptionOutput(allow_null=True)
    next_subscription = SubscriptionOutput(allow_null=True)


class AccountUpdateInput(serializers.Serializer):
    billing_email = serializers.EmailField(required=False, allow_blank=True)
    spend_limit_minor = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    soft_spend_limit_minor = serializers.IntegerField(required=False, allow_null=True, min_value=0)


class UsageLineOutput(serializers.Serializer):
    kind = serializers.CharField()
    description = serializers.CharField()
    meter = serializers.CharField()
    dimension = serializers.CharField()
    quantity = serializers.DecimalField(**DECIMAL)
    included_quantity = serializers.DecimalField(**DECIMAL)
    billable_quantity = serializers.DecimalField(**DECIMAL)
    amount_minor = serializers.IntegerField()
    segment_start = serializers.DateTimeField()
    segment_end = serializers.DateTimeField()


class UsageTotalOutput(serializers.Serializer):
    meter = serializers.CharField()
    dimension = serializers.CharField()
    unit = serializers.CharField()
    quantity = serializers.DecimalField(**DECIMAL)


class UsageSummaryOutput(serializers.Serializer):
    period = serializers.CharField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    currency = serializers.CharField()
    is_current = serializers.BooleanField()
    usage = UsageTotalOutput(many=True)
    lines = UsageLineOutput(many=True)
    cost_so_far_minor = serializers.IntegerField()
    forecast_minor = serializers.IntegerField(allow_null=True)


class UsageDayOutput(serializers.Serializer):
    day = serializers.DateField()
    meter = serializers.CharField()
    quantity = serializers.DecimalField(**DECIMAL)


class QuotaOutput(serializers.ModelSerializer):
    limit = serializers.DecimalField(**DECIMAL)

    class Meta:
        model = Quota
        fields = ["id", "meter", "dimension", "kind", "limit", "created_at"]
        read_only_fields = fields


class QuotaInput(serializers.Serializer):
    meter = serializers.ChoiceField(choices=sorted(METERS))
    dimension = serializers.CharField(required=False, allow_blank=True, default="", max_length=40)
    kind = serializers.ChoiceField(choices=Quota.Kind.values)
    limit = serializers.DecimalField(max_digits=24, decimal_places=6, min_value=0)


class CreditGrantOutput(serializers.Serializer):
    id = serializers.IntegerField(source="grant.id")
    amount_minor = serializers.IntegerField(source="grant.amount_minor")
    currency = serializers.CharField(source="grant.currency")
    reason = serializers.CharField(source="grant.reason")
    granted_at = serializers.DateTimeField(source="grant.granted_at")
    expires_at = serializers.DateTimeField(source="grant.expires_at", allow_null=True)
    used_minor = serializers.IntegerField()
    remaining_minor = serializers.IntegerField()


class CreditsOutput(serializers.Serializer):
    balance_minor = serializers.IntegerField()
    currency = serializers.CharField()
    grants = CreditGrantOutput(many=True)


class EstimateItemInput(serializers.Serializer):
    meter = serializers.ChoiceField(choices=sorted(METERS))
    dimension = serializers.CharField(required=False, allow_blank=True, default="", max_length=40)
    quantity = serializers.DecimalField(max_digits=24, decimal_places=6, min_value=0)


class EstimateInput(serializers.Serializer):
    usage = EstimateItemInput(many=True, allow_empty=False, max_length=50)


class EstimateOutput(serializers.Serializer):
    estimated_cost_minor = serializers.IntegerField()
    remaining_minor = serializers.IntegerField(allow_null=True)
    currency = serializers.CharField()
    usage = serializers.ListField(child=serializers.DictField())


class InvoiceLineOutput(serializers.ModelSerializer):
    quantity = serializers.DecimalField(**DECIMAL)
    included_quantity = serializers.DecimalField(**DECIMAL)
    billable_quantity = serializers.DecimalField(**DECIMAL)

    class Meta:
        model = InvoiceLine
        fields = ["position", "kind", "description", "meter", "dimension", "quantity", "included_quantity",
                  "billable_quantity", "tiers", "amount_minor", "segment_start", "segment_end"]
        read_only_fields = fields


class InvoiceOutput(serializers.ModelSerializer):
    tax_rate = serializers.DecimalField(max_digits=6, decimal_places=4, coerce_to_string=True)

    class Meta:
        model = Invoice
        fields = ["id", "number", "status", "period_start", "period_end", "currency", "subtotal_minor",
                  "credits_applied_minor", "tax_label", "tax_rate", "tax_minor", "total_minor", "usage_event_count",
                  "issued_at", "paid_at", "voided_at", "created_at"]
        read_only_fields = fields


class InvoiceDetailOutput(InvoiceOutput):
    lines = InvoiceLineOutput(many=True, read_only=True)

    class Meta(InvoiceOutput.Meta):
        fields = [*InvoiceOutput.Meta.fields, "lines"]
        read_only_fields = fields


class CreditGrantModelOutput(serializers.ModelSerializer):
    class Meta:
        model = CreditGrant
        fields = ["id", "amount_minor", "currency", "reason", "granted_at", "expires_at"]
        read_only_fields = fields
