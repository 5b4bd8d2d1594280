"""Billing data: the usage ledger, plans and their versioned prices, each tenant's account,
subscriptions, quotas, credits and invoices.

Money is integer minor units (cents) with an ISO currency; unit prices and quantities are Decimal.
Nothing here is a float."""
import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants.managers import TenantScopedManager

from .meters import METERS

QUANTITY = {"max_digits": 24, "decimal_places": 6}
UNIT_PRICE = {"max_digits": 20, "decimal_places": 8}
currency_validator = RegexValidator(r"^[A-Z]{3}$", "An ISO 4217 code in capitals, e.g. USD.")
METER_CHOICES = [(name, name) for name in METERS]


class UsageEvent(models.Model):
    """One metered quantity. Append-only (a trigger refuses UPDATE and DELETE); the unique
    (tenant, idempotency_key) makes a retry or a duplicate delivery a no-op.

    `occurred_at` is when the producer says it happened; `accounted_at` is the instant the ledger
    bills it at: the same, unless the period it fell in was already closed when it arrived, in
    which case it moves to the start of the open period (billed late, never lost, never twice)."""

    class Source(models.TextChoices):
        JOB = "job", "Job"
        REQUEST = "request", "API request"
        TASK = "task", "Labeling or review task"
        SYSTEM = "system", "Platform (e.g. storage sampling)"

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    meter = models.CharField(max_length=40, choices=METER_CHOICES)
    dimension = models.CharField(max_length=40, blank=True)
    quantity = models.DecimalField(**QUANTITY)
    occurred_at = models.DateTimeField()
    accounted_at = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now)
    source_type = models.CharField(max_length=20, choices=Source.choices)
    source_id = models.CharField(max_length=100)
    idempotency_key = models.CharField(max_length=200)

    objects = TenantScopedManager()

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "accounted_at"], name="billing_usage_tenant_at"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], name="billing_usage_idempotency"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="billing_usage_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} {self.meter}:{self.dimension} ({self.idempotency_key})"


class Plan(models.Model):
    """A plan tenants can be on (platform-wide). Its prices live in versions: changing prices
    writes a new version; subscriptions keep the version they started on until they change."""

    id = models.BigAutoField(primary_key=True)
    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    currency = models.CharField(max_length=3, validators=[currency_validator], default="USD")
    is_public = models.BooleanField(default=True, help_text="Offered to tenants on the plan page.")
    is_prepaid = models.BooleanField(default=False, help_text="Work is refused once prepaid credit is spent.")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class PlanVersion(models.Model):
    id = models.BigAutoField(primary_key=True)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    base_fee_minor = models.BigIntegerField(validators=[MinValueValidator(0)], help_text="Monthly, in minor units.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plan", "version"], name="billing_planversion_unique"),
            models.CheckConstraint(condition=Q(base_fee_minor__gte=0), name="billing_planversion_fee_nonnegative"),
        ]

    def __str__(self) -> str:
        return f"{self.plan.code} v{self.version}"


def tiers_validate(tiers) -> None:
    """Graduated tiers: [{"up_to": "1000000", "unit_price": "0.01"}, ..., {"up_to": null, ...}],
    bounds increasing, the last open-ended; amounts are decimal strings (never floats)."""
    if not isinstance(tiers, list) or not tiers:
        raise ValidationError("tiers: a non-empty list is required")
    previous = Decimal(0)
    for index, tier in enumerate(tiers):
        if not isinstance(tier, dict) or set(tier) != {"up_to", "unit_price"}:
            raise ValidationError(f"tiers[{index}]: needs exactly up_to and unit_price")
        if not isinstance(tier["unit_price"], str):
            raise ValidationError(f"tiers[{index}].unit_price: a decimal string is required")
        try:
            price = Decimal(tier["unit_price"])
        except ArithmeticError:
            raise ValidationError(f"tiers[{index}].unit_price: not a decimal") from None
        if not price.is_finite() or price < 0:
            raise ValidationError(f"tiers[{index}].unit_price: must be zero or more")
        last = index == len(tiers) - 1
        if tier["up_to"] is None:
            if not last:
                raise ValidationError(f"tiers[{index}].up_to: only the last tier is open-ended")
            continue
        if last:
            raise ValidationError(f"tiers[{index}].up_to: the last tier must be open-ended (null)")
        if not isinstance(tier["up_to"], str):
            raise ValidationError(f"tiers[{index}].up_to: a decimal string is required")
        try:
            bound = Decimal(tier["up_to"])
        except ArithmeticError:
            raise ValidationError(f"tiers[{index}].up_to: not a decimal") from None
        if not bound.is_finite() or bound <= previous:
            raise ValidationError(f"tiers[{index}].up_to: bounds must increase")
        previous = bound


class PlanPrice(models.Model):
    """The price of one meter (and dimension, or every dimension when blank) in a plan version:
    an included allowance per month, then graduated tiers. A tier's unit_price is in minor units
    per `price_unit` quantity (e.g. 5 cents per 1,000 tokens: unit_price "5", price_unit 1000)."""

    id = models.BigAutoField(primary_key=True)
    plan_version = models.ForeignKey(PlanVersion, on_delete=models.CASCADE, related_name="prices")
    meter = models.CharField(max_length=40, choices=METER_CHOICES)
    dimension = models.CharField(max_length=40, blank=True, help_text="Blank: every dimension without its own price.")
    included_quantity = models.DecimalField(**QUANTITY, default=Decimal(0))
    price_unit = models.PositiveBigIntegerField(default=1)
    tiers = models.JSONField(validators=[tiers_validate])

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plan_version", "meter", "dimension"], name="billing_planprice_unique"),
            models.CheckConstraint(condition=Q(included_quantity__gte=0), name="billing_planprice_included_nonnegative"),
            models.CheckConstraint(condition=Q(price_unit__gte=1), name="billing_planprice_unit_positive"),
        ]

    def clean(self) -> None:
        meter = METERS.get(self.meter)
        if meter is not None and self.dimension:
            meter.dimension_check(self.dimension)


class BillingAccount(models.Model):
    """A tenant's billing settings and the ledger's close mark. Locked FOR SHARE by every metering
    write and FOR UPDATE by the close, so no usage can slip into a period while it is rated."""

    tenant = models.OneToOneField("tenants.Organization", on_delete=models.CASCADE, primary_key=True, related_name="billing_account")
    currency = models.CharField(max_length=3, validators=[currency_validator], default="USD")
    tax_rate = models.DecimalField(max_digits=6, decimal_places=4, default=Decimal(0), validators=[MinValueValidator(0)],
                                   help_text="e.g. 0.2000 for 20%")
    tax_label = models.CharField(max_length=40, blank=True, default="Tax")
    billing_email = models.EmailField(blank=True)
    # Usage dated before this instant belongs to a closed period (or to before billing began); it
    # is accounted at this instant.
    closed_through = models.DateTimeField(null=True, blank=True)
    spend_limit_minor = models.BigIntegerField(null=True, blank=True, validators=[MinValueValidator(0)],
                                               help_text="Hard limit on a period's cost; work past it is refused.")
    soft_spend_limit_minor = models.BigIntegerField(null=True, blank=True, validators=[MinValueValidator(0)])
    stripe_customer_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(tax_rate__gte=0) & Q(tax_rate__lt=1), name="billing_account_tax_rate_range"),
        ]

    def __str__(self) -> str:
        return f"billing account of {self.tenant_id}"


class Subscription(models.Model):
    """A tenant on a plan version from starts_at until ends_at (open-ended when null). A plan
    change ends one subscription and starts the next at the same instant; the close prorates."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    plan_version = models.ForeignKey(PlanVersion, on_delete=models.PROTECT, related_name="+")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "starts_at"], name="billing_sub_tenant_start")]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__isnull=True) | Q(ends_at__gt=models.F("starts_at")),
                                   name="billing_sub_ends_after_start"),
        ]


class Quota(models.Model):
    """A limit on a meter's quantity per billing period. Hard: work that would pass it is refused
    (402) and running jobs stop at their next checkpoint. Soft: crossing it notifies, once a period."""

    class Kind(models.TextChoices):
        HARD = "hard", "Hard"
        SOFT = "soft", "Soft"

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    meter = models.CharField(max_length=40, choices=METER_CHOICES)
    dimension = models.CharField(max_length=40, blank=True, help_text="Blank: the meter's total over every dimension.")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    limit = models.DecimalField(**QUANTITY, validators=[MinValueValidator(0)])
    notified_period = models.DateField(null=True, blank=True, help_text="Start of the period last notified (soft).")
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantScopedManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "meter", "dimension", "kind"], name="billing_quota_unique"),
            models.CheckConstraint(condition=Q(limit__gte=0), name="billing_quota_limit_nonnegative"),
        ]


class CreditGrant(models.Model):
    """Prepaid or promotional credit. Invoices draw on grants that expire soonest first."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    amount_minor = models.BigIntegerField(validators=[MinValueValidator(1)])
    currency = models.CharField(max_length=3, validators=[currency_validator])
    reason = models.CharField(max_length=200)
    granted_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    objects = TenantScopedManager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "granted_at"], name="billing_credit_tenant_granted")]
        constraints = [models.CheckConstraint(condition=Q(amount_minor__gt=0), name="billing_credit_positive")]


class Invoice(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open"
        PAID = "paid", "Paid"
        VOID = "void", "Void"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    number = models.CharField(max_length=40, unique=True, null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    currency = models.CharField(max_length=3, validators=[currency_validator])
    subtotal_minor = models.BigIntegerField(default=0)
    credits_applied_minor = models.BigIntegerField(default=0)
    tax_rate = models.DecimalField(max_digits=6, decimal_places=4, default=Decimal(0))
    tax_label = models.CharField(max_length=40, blank=True)
    tax_minor = models.BigIntegerField(default=0)
    total_minor = models.BigIntegerField(default=0)
    usage_event_count = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    issued_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    payment_reference = models.CharField(max_length=200, blank=True)
    stripe_invoice_id = models.CharField(max_length=100, blank=True)

    objects = TenantScopedManager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at"], name="billing_invoice_tenant_created")]
        constraints = [
            # One live invoice per tenant and period: the close is idempotent. A voided invoice
            # frees the period for a corrected one.
            models.UniqueConstraint(fields=["tenant", "period_start"], condition=~Q(status="void"),
                                    name="billing_invoice_one_per_period"),
            models.CheckConstraint(condition=Q(status__in=["draft", "open", "paid", "void"]), name="billing_invoice_status_valid"),
            models.CheckConstraint(condition=Q(total_minor__gte=0) & Q(credits_applied_minor__gte=0),
                                   name="billing_invoice_amounts_nonnegative"),
        ]

    def __str__(self) -> str:
        return self.number or f"draft {self.id}"


class InvoiceLine(models.Model):
    class Kind(models.TextChoices):
        BASE_FEE = "base_fee", "Plan fee"
        USAGE = "usage", "Usage"

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    description = models.CharField(max_length=300)
    plan_version = models.ForeignKey(PlanVersion, on_delete=models.PROTECT, related_name="+")
    segment_start = models.DateTimeField()
    segment_end = models.DateTimeField()
    meter = models.CharField(max_length=40, blank=True)
    dimension = models.CharField(max_length=40, blank=True)
    quantity = models.DecimalField(**QUANTITY, default=Decimal(0))
    included_quantity = models.DecimalField(**QUANTITY, default=Decimal(0))
    billable_quantity = models.DecimalField(**QUANTITY, default=Decimal(0))
    tiers = models.JSONField(default=list, blank=True, help_text="How the billable quantity fell into tiers.")
    amount_minor = models.BigIntegerField()

    objects = TenantScopedManager()

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["invoice", "position"], name="billing_invoiceline_position")]


class CreditApplication(models.Model):
    """How much of a credit grant an invoice used."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("tenants.Organization", on_delete=models.CASCADE, related_name="+")
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="credit_applications")
    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="applications")
    amount_minor = models.BigIntegerField()

    objects = TenantScopedManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["invoice", "grant"], name="billing_creditapp_unique"),
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="billing_creditapp_positive"),
        ]


class StripeEvent(models.Model):
    """A Stripe webhook event already processed: a replay finds its id here and does nothing.
    Platform-level (Stripe does not know our tenants until the event is read)."""

    id = models.CharField(max_length=100, primary_key=True)
    type = models.CharField(max_length=100)
    received_at = models.DateTimeField(default=timezone.now)
    # The organization the event concerned (from our metadata), for staff; not a tenant-owned row.
    lode_tenant_ref = models.UUIDField(null=True, blank=True)
    outcome = models.CharField(max_length=200, blank=True)
