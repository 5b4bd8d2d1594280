"""Rating and the monthly close against invoices computed by hand (see each test's arithmetic)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from lode.billing import rating, selectors, services
from lode.billing.models import CreditApplication, Invoice, InvoiceLine
from django.utils import timezone

from lode.core.errors import Conflict, ValidationFailed
from tenants.models import AuditEvent
from tests.billing.factories import month, plan_make, subscriptions_set, tax_rate_set, usage
from tests.conftest import rows

pytestmark = pytest.mark.django_db

GPU_TIERS = [{"up_to": "7200", "unit_price": "400"}, {"up_to": None, "unit_price": "300"}]
TOKEN_TIERS = [{"up_to": "10000", "unit_price": "7"}, {"up_to": None, "unit_price": "5"}]


@pytest.fixture
def alpha():
    """$30/month; GPU h100: 1 h included, then $4/h up to 2 h billable, $3/h beyond; output tokens
    (every size pooled): 1,000 included, then 7 cents per 1,000 up to 10,000, 5 cents beyond."""
    return plan_make(code="alpha", base_fee_minor=3000, prices=[
        {"meter": "gpu_seconds", "dimension": "h100", "included_quantity": 3600, "price_unit": 3600, "tiers": GPU_TIERS},
        {"meter": "output_tokens", "dimension": "", "included_quantity": 1000, "price_unit": 1000, "tiers": TOKEN_TIERS},
    ])


@pytest.fixture
def beta():
    """$90/month; GPU h100: 10 h included then $2.50/h; output tokens 4 cents per 1,000."""
    return plan_make(code="beta", base_fee_minor=9000, prices=[
        {"meter": "gpu_seconds", "dimension": "h100", "included_quantity": 36000, "price_unit": 3600,
         "tiers": [{"up_to": None, "unit_price": "250"}]},
        {"meter": "output_tokens", "dimension": "", "included_quantity": 0, "price_unit": 1000,
         "tiers": [{"up_to": None, "unit_price": "4"}]},
    ])


def _amounts(invoice) -> list[tuple[str, int]]:
    return [(line.description, line.amount_minor)
            for line in rows(InvoiceLine, invoice.tenant_id, invoice_id=invoice.id)]


def test_full_month_with_graduated_tiers_allowance_credit_and_tax_matches_the_hand_computed_invoice(make_tenant, alpha):
    tenant_id = make_tenant().organization.id
    subscriptions_set(tenant_id, [(alpha, month(2026, 9), None)])
    tax_rate_set(tenant_id, "0.2000")
    services.usage_record(tenant_id=tenant_id, events=[
        usage("gpu_seconds", 10000, dimension="h100", at=month(2026, 10, 3)),
        usage("gpu_seconds", 8000, dimension="h100", at=month(2026, 10, 30)),
        usage("output_tokens", 25500, dimension="small", at=month(2026, 10, 12)),
        usage("output_tokens", 999, dimension="small", at=month(2026, 9, 30)),   # September: not this invoice
        usage("output_tokens", 999, dimension="small", at=month(2026, 11, 1)),   # November: not this invoice
    ])
    services.credit_grant(tenant_id=tenant_id, amount_minor=1000, reason="launch credit")

    invoice = services.invoice_close(tenant_id=tenant_id, period_start=month(2026, 10))

    # base fee 3000
    # GPU: 18,000 s - 3,600 included = 14,400 billable: 7,200 x 400/3,600 = 800 + 7,200 x 300/3,600 = 600 -> 1400
    # tokens: 25,500 - 1,000 = 24,500: 10,000 x 7/1,000 = 70 + 14,500 x 5/1,000 = 72.5 -> 142.5 -> 143
    assert [amount for _, amount in _amounts(invoice)] == [3000, 1400, 143]
    assert invoice.subtotal_minor == 4543
    assert invoice.credits_applied_minor == 1000
    assert invoice.tax_minor == 709           # 20% of 3,543 = 708.6
    assert invoice.total_minor == 4252        # 3,543 + 709
    assert invoice.status == Invoice.Status.OPEN and invoice.number.startswith("LODE-202610-")
    assert invoice.usage_event_count == 3
    gpu_line = rows(InvoiceLine, tenant_id, invoice_id=invoice.id, meter="gpu_seconds")[0]
    assert gpu_line.billable_quantity == Decimal("14400")
    assert [tier["quantity"] for tier in gpu_line.tiers] == ["7200", "7200"]
    assert selectors.credit_balance(tenant_id=tenant_id) == 0


def test_mid_month_plan_change_prorates_fees_and_allowances_to_the_minor_unit(make_tenant, alpha, beta):
    tenant_id = make_tenant().organization.id
    change = month(2026, 10, 11)  # 10 of October's 31 days on alpha, 21 on beta
    subscriptions_set(tenant_id, [(alpha, month(2026, 9), change), (beta, change, None)])
    tax_rate_set(tenant_id, "0.0750")
    services.usage_record(tenant_id=tenant_id, events=[
        usage("gpu_seconds", 9000, dimension="h100", at=month(2026, 10, 5)),
        usage("output_tokens", 5000, dimension="small", at=month(2026, 10, 6)),
        usage("gpu_seconds", 50000, dimension="h100", at=month(2026, 10, 20)),
        usage("output_tokens", 12345, dimension="medium", at=month(2026, 10, 21)),
    ])

    invoice = services.invoice_close(tenant_id=tenant_id, period_start=month(2026, 10))

    # alpha, 10/31 of the month:
    #   fee 3,000 x 10/31 = 967.74 -> 968
    #   GPU included 3,600 x 10/31 = 1,161.290322; billable 7,838.709678:
    #       7,200 x 400/3,600 = 800 + 638.709678 x 300/3,600 = 53.2258 -> 853
    #   tokens included 1,000 x 10/31 = 322.580645; billable 4,677.419355 x 7/1,000 = 32.74 -> 33
    # beta, 21/31:
    #   fee 9,000 x 21/31 = 6,096.77 -> 6,097
    #   GPU included 36,000 x 21/31 = 24,387.096774; billable 25,612.903226 x 250/3,600 = 1,778.67 -> 1,779
    #   tokens 12,345 x 4/1,000 = 49.38 -> 49
    assert [amount for _, amount in _amounts(invoice)] == [968, 853, 33, 6097, 1779, 49]
    assert invoice.subtotal_minor == 9779
    assert invoice.tax_minor == 733          # 7.5% of 9,779 = 733.425
    assert invoice.total_minor == 10512
    alpha_gpu = rows(InvoiceLine, tenant_id, invoice_id=invoice.id, meter="gpu_seconds", plan_version_id=alpha.id)[0]
    assert alpha_gpu.included_quantity == Decimal("1161.290322")


def test_credits_draw_soonest_expiring_first_and_skip_expired_and_carry_the_rest(make_tenant, alpha):
    tenant_id = make_tenant().organization.id
    subscriptions_set(tenant_id, [(alpha, month(2026, 9), None)])
    expired = services.credit_grant(tenant_id=tenant_id, amount_minor=5000, reason="old promo", expires_at=month(2026, 9, 20))
    later = services.credit_grant(tenant_id=tenant_id, amount_minor=2000, reason="no expiry")
    soon = services.credit_grant(tenant_id=tenant_id, amount_minor=2500, reason="promo", expires_at=month(2027, 1))

    invoice = services.invoice_close(tenant_id=tenant_id, period_start=month(2026, 10))

    # Only the 3,000 base fee: 2,500 from the grant expiring soonest, 500 from the open-ended one.
    applied = {app.grant_id: app.amount_minor for app in rows(CreditApplication, tenant_id, invoice_id=invoice.id)}
    assert applied == {soon.id: 2500, later.id: 500}
    assert expired.id not in applied
    assert invoice.total_minor == 0 and invoice.status == Invoice.Status.PAID
    assert selectors.credit_balance(tenant_id=tenant_id) == 1500


def test_rerunning_the_close_returns_the_same_invoice_and_changes_nothing(make_tenant, alpha):
    tenant_id = make_tenant().organization.id
    subscriptions_set(tenant_id, [(alpha, month(2026, 9), None)])
    services.usage_record(tenant_id=tenant_id, events=[usage("gpu_seconds", 20000, dimension="h100", at=month(2026, 10, 9))])
    services.credit_grant(tenant_id=tenant_id, amount_minor=700, reason="credit")
    first = services.invoice_close(tenant_id=tenant_id, period_start=month(2026, 10))
    before = (_amounts(first), rows(CreditApplication, tenant_id), selectors.credit_balance(tenant_id=tenant_id))

    again = services.invoice_close(tenant_id=tenant_id, period_start=month(2026, 10))

    assert again.id == first.id and again.number == first.number and again.total_minor == first.total_minor
    assert (_amounts(again), rows(CreditApplication, tenant_id), selectors.credit_balance(tenant_id=tenant_id)) == before
    assert len(rows(Invoice, tenant_id)) == 1


def test_usage_arriving_after_the_close_is_billed_in_the_next_period_not_lost_or_twice(make_tenant, alpha):
    tenant_id = make_tenant().organization.id
    subscriptions_set(tenant_id, [(alpha, month(2026, 9), None)])
    services.usage_record(tenant_id=tenant_id, events=[usage("gpu_seconds", 10000, dimension="h100", at=month(2026, 10, 9), key="a")])
    october = services.invoice_close(tenant_id=tenant_id, period_start=month(2026, 10))

    late = services.usage_record(tenant_id=tenant_id, events=[
        usage("gpu_seconds", 10000, dimension="h100", at=month(2026, 10, 9), key="a"),   # a retry: dropped
        usage("gpu_seconds", 5000, dimension="h100", at=month(2026, 10, 31, 23), key="b"),  # late
    ])

    assert (late.recorded, late.duplicates) == (1, 1)
    november = selectors.usage_totals(tenant_id=tenant_id, start=month(2026, 11), end=month(2026, 12))
    assert november == {("gpu_seconds", "h100"): Decimal("5000")}
    assert services.invoice_close(tenant_id=tenant_id, period_start=month(2026, 10)).total_minor == october.total_minor


def test_a_voided_invoice_frees_its_period_for_a_corrected_one_and_returns_its_credit(make_tenant, alpha):
    tenant_id = make_tenant().organization.id
    subscriptions_set(tenant_id, [(alpha, month(2026, 9), None)])
    services.credit_grant(tenant_id=tenant_id, amount_minor=1000, reason="credit")
    first = services.invoice_close(tenant_id=tenant_id, period_start=month(2026, 10))
    assert selectors.credit_balance(tenant_id=tenant_id) == 0

    services.invoice_void(tenant_id=tenant_id, invoice_id=first.id, reason="wrong tax")
    assert selectors.credit_balance(tenant_id=tenant_id) == 1000
    tax_rate_set(tenant_id, "0.1000")
    second = services.invoice_close(tenant_id=tenant_id, period_start=month(2026, 10))

    assert second.id != first.id and second.number != first.number
    assert (second.subtotal_minor, second.credits_applied_minor, second.tax_minor, second.total_minor) == (3000, 1000, 200, 2200)
    with pytest.raises(Conflict):
        services.invoice_mark_paid(tenant_id=tenant_id, invoice_id=first.id, reference="late")


def test_the_close_refuses_a_period_that_has_not_ended_or_is_not_a_month_start(make_tenant):
    tenant_id = make_tenant().organization.id
    current_start, _ = selectors.period_bounds(timezone.now())
    with pytest.raises(ValidationFailed, match="has not ended"):
        services.invoice_close(tenant_id=tenant_id, period_start=current_start)
    with pytest.raises(ValidationFailed, match="first of a month"):
        services.invoice_close(tenant_id=tenant_id, period_start=month(2026, 10, 2))


def test_staff_marking_an_open_invoice_paid_is_recorded_once(make_tenant, alpha):
    tenant_id = make_tenant().organization.id
    subscriptions_set(tenant_id, [(alpha, month(2026, 9), None)])
    invoice = services.invoice_close(tenant_id=tenant_id, period_start=month(2026, 10))
    assert invoice.status == Invoice.Status.OPEN

    services.invoice_mark_paid(tenant_id=tenant_id, invoice_id=invoice.id, reference="bank transfer 42")
    again = services.invoice_mark_paid(tenant_id=tenant_id, invoice_id=invoice.id, reference="bank transfer 42")

    assert again.status == Invoice.Status.PAID and again.payment_reference == "bank transfer 42"
    assert len(rows(AuditEvent, tenant_id, action="billing.invoice_paid")) == 1
    with pytest.raises(Conflict):
        services.invoice_void(tenant_id=tenant_id, invoice_id=invoice.id, reason="too late")


def test_tiered_amount_splits_quantity_across_tiers_exactly():
    price = rating.Price.from_tiers_json(meter="output_tokens", dimension="", included_quantity=Decimal(0),
                                         price_unit=1000, tiers=TOKEN_TIERS)
    amount, breakdown = rating.tiered_amount(Decimal("10000.5"), price)
    assert amount == Decimal("70") + Decimal("0.5") * 5 / 1000
    assert [tier["quantity"] for tier in breakdown] == ["10000", "0.5"]
    assert rating.marginal_cost(price=price, used=Decimal(9000), extra=Decimal(2000)) == Decimal(7) + Decimal(5)
    assert rating.round_minor(Decimal("0.5")) == 1 and rating.round_minor(Decimal("2.4999")) == 2
