"""The billing API: quotas and the 402 refusal with its numbers, spend limits and prepaid credit,
plan changes, usage so far with a forecast, invoices, and bad input."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone

from lode.billing import selectors, services
from lode.billing.models import Quota, Subscription
from lode.core.models import Job
from tenants.models import AuditEvent
from tests.billing.factories import month, usage
from tests.conftest import rows

pytestmark = pytest.mark.django_db


@dataclass
class Owner:
    id: object
    user: object
    client: object


@pytest.fixture
def owner(make_tenant, api_client_for) -> Owner:
    tenant = make_tenant()
    return Owner(id=tenant.organization.id, user=tenant.user, client=api_client_for(tenant.user))


def test_work_past_a_hard_quota_is_refused_with_402_naming_remaining_and_estimated(owner):
    created = owner.client.post("/api/v1/billing/quotas",
                                {"meter": "gpu_seconds", "kind": "hard", "limit": "100"}, format="json")
    assert created.status_code == 201, created.content
    services.usage_record(tenant_id=owner.id, events=[usage("gpu_seconds", 60, dimension="cpu")])

    fits = owner.client.post("/api/v1/billing/estimate", {"usage": [{"meter": "gpu_seconds", "dimension": "cpu", "quantity": "40"}]}, format="json")
    refused = owner.client.post("/api/v1/billing/estimate", {"usage": [{"meter": "gpu_seconds", "dimension": "cpu", "quantity": "41"}]}, format="json")
    job = owner.client.post("/api/v1/jobs", {"kind": "core.ping.gpu", "params": {"steps": 10, "sleep_seconds": 5}}, format="json")

    assert fits.status_code == 200 and fits.json()["estimated_cost_minor"] == 0  # inside the 10 free CPU-hours
    assert refused.status_code == 402
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert Decimal(error["details"]["remaining"]) == 40 and Decimal(error["details"]["estimated"]) == 41
    assert Decimal(error["details"]["used"]) == 60 and Decimal(error["details"]["limit"]) == 100
    assert job.status_code == 402 and Decimal(job.json()["error"]["details"]["estimated"]) == 50
    assert rows(Job, owner.id) == []  # nothing was written for the refused job


def test_a_job_that_fits_reports_its_estimate_on_creation(owner):
    response = owner.client.post("/api/v1/jobs", {"kind": "core.ping.gpu", "params": {"steps": 4, "sleep_seconds": 0.5}}, format="json")

    assert response.status_code == 202, response.content
    estimate = response.json()["estimate"]
    assert estimate["usage"][0]["meter"] == "gpu_seconds" and Decimal(estimate["usage"][0]["quantity"]) == 2
    assert estimate["currency"] == "USD"


def test_a_spend_limit_refuses_work_whose_cost_would_pass_it(owner):
    patched = owner.client.patch("/api/v1/billing/account", {"spend_limit_minor": 500}, format="json")
    assert patched.status_code == 200 and patched.json()["spend_limit_minor"] == 500
    services.usage_record(tenant_id=owner.id, events=[usage("output_tokens", 5_250_000, dimension="small")])  # 300 cents

    ok = owner.client.post("/api/v1/billing/estimate", {"usage": [{"meter": "output_tokens", "dimension": "small", "quantity": "3000000"}]}, format="json")
    refused = owner.client.post("/api/v1/billing/estimate", {"usage": [{"meter": "output_tokens", "dimension": "small", "quantity": "4000000"}]}, format="json")

    assert ok.status_code == 200 and ok.json() | {"usage": None} == {
        "estimated_cost_minor": 180, "remaining_minor": 200, "currency": "USD", "usage": None}
    assert refused.status_code == 402
    details = refused.json()["error"]["details"]
    assert details["limit_type"] == "spend_limit"
    assert (details["remaining_minor"], details["estimated_cost_minor"], details["cost_so_far_minor"]) == (200, 240, 300)


def test_a_prepaid_tenant_can_spend_only_its_unspent_credit(owner):
    assert owner.client.post("/api/v1/billing/subscription", {"plan": "prepaid"}, format="json").status_code == 201
    services.credit_grant(tenant_id=owner.id, amount_minor=1000, reason="top-up")
    # gpu h100 on the prepaid plan: 450 cents an hour, nothing included
    services.usage_record(tenant_id=owner.id, events=[usage("gpu_seconds", 3600, dimension="h100")])

    ok = owner.client.post("/api/v1/billing/estimate", {"usage": [{"meter": "gpu_seconds", "dimension": "h100", "quantity": "3600"}]}, format="json")
    refused = owner.client.post("/api/v1/billing/estimate", {"usage": [{"meter": "gpu_seconds", "dimension": "h100", "quantity": "7200"}]}, format="json")

    assert ok.status_code == 200 and ok.json()["remaining_minor"] == 550
    assert refused.status_code == 402
    assert refused.json()["error"]["details"] | {"usage": None} == {
        "limit_type": "prepaid_credit", "remaining_minor": 550, "estimated_cost_minor": 900, "cost_so_far_minor": 450,
        "currency": "USD", "usage": None}


def test_crossing_a_soft_limit_notifies_once_a_period(owner, django_capture_on_commit_callbacks):
    services.quota_set(tenant_id=owner.id, meter="gpu_seconds", kind="soft", limit=100)
    services.usage_record(tenant_id=owner.id, events=[usage("gpu_seconds", 150, dimension="cpu")])

    with django_capture_on_commit_callbacks(execute=True):
        first = services.limits_check(tenant_id=owner.id, meters=["gpu_seconds"])
        second = services.limits_check(tenant_id=owner.id, meters=["gpu_seconds"])

    assert [item["used"] for item in first.soft_crossed] == ["150.000000"] and second.soft_crossed == []
    assert len(rows(AuditEvent, owner.id, action="billing.soft_limit_crossed")) == 1
    assert [message.to for message in mail.outbox] == [[owner.user.email]]
    assert "gpu_seconds" in mail.outbox[0].body


def test_plan_change_takes_effect_at_the_given_time_and_replaces_a_scheduled_one(owner):
    _, next_month = selectors.period_bounds(timezone.now())

    later = owner.client.post("/api/v1/billing/subscription", {"plan": "startup", "effective_at": next_month.isoformat()}, format="json")
    account = owner.client.get("/api/v1/billing/account").json()
    now_change = owner.client.post("/api/v1/billing/subscription", {"plan": "prepaid"}, format="json")

    assert later.status_code == 201 and later.json()["plan"] == "startup"
    assert account["subscription"]["plan"] == "developer" and account["next_subscription"]["plan"] == "startup"
    assert now_change.status_code == 201
    plans = [(sub.plan_version.plan.code, sub.ends_at is None)
             for sub in rows(Subscription, owner.id, plan_version__isnull=False)]
    assert sorted(plans) == [("developer", False), ("prepaid", True)]  # the scheduled change was replaced
    assert owner.client.get("/api/v1/billing/account").json()["next_subscription"] is None


@pytest.mark.parametrize("body, field", [
    ({"plan": "no-such-plan"}, "plan"),
    ({"plan": "startup", "effective_at": "2020-01-01T00:00:00Z"}, "effective_at"),
    ({"plan": "startup", "effective_at": "next tuesday"}, "effective_at"),
    ({}, "plan"),
])
def test_bad_plan_changes_are_400_naming_the_field(owner, body, field):
    response = owner.client.post("/api/v1/billing/subscription", body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert field in error["message"] or field in error["details"].get("fields", {}) or error["details"].get("field") == field


@pytest.mark.parametrize("path, body, field", [
    ("/api/v1/billing/quotas", {"meter": "nope", "kind": "hard", "limit": "1"}, "meter"),
    ("/api/v1/billing/quotas", {"meter": "gpu_seconds", "dimension": "z80", "kind": "hard", "limit": "1"}, "dimension"),
    ("/api/v1/billing/quotas", {"meter": "gpu_seconds", "kind": "firm", "limit": "1"}, "kind"),
    ("/api/v1/billing/quotas", {"meter": "gpu_seconds", "kind": "hard", "limit": "-1"}, "limit"),
    ("/api/v1/billing/estimate", {"usage": []}, "usage"),
    ("/api/v1/billing/estimate", {"usage": [{"meter": "images", "dimension": "small", "quantity": "0"}]}, "quantity"),
    ("/api/v1/billing/estimate", {"usage": [{"meter": "images", "dimension": "huge", "quantity": "1"}]}, "dimension"),
])
def test_bad_quota_and_estimate_input_is_400_naming_the_field(owner, path, body, field):
    response = owner.client.post(path, body, format="json")

    assert response.status_code == 400, response.content
    assert field in response.content.decode()
    assert rows(Quota, owner.id) == []


def test_bad_period_and_account_input_is_400(owner):
    assert owner.client.get("/api/v1/billing/usage?period=2026-13x").status_code == 400
    assert owner.client.get("/api/v1/billing/usage?period=2999-01").status_code == 400
    assert owner.client.patch("/api/v1/billing/account", {"spend_limit_minor": -5}, format="json").status_code == 400
    assert owner.client.patch("/api/v1/billing/account", {"billing_email": "not-an-address"}, format="json").status_code == 400
    assert owner.client.patch("/api/v1/billing/account", {}, format="json").status_code == 400


def test_usage_summary_shows_cost_so_far_and_a_forecast_and_daily_series(owner):
    services.usage_record(tenant_id=owner.id, events=[usage("output_tokens", 1_250_000, dimension="small")])

    summary = owner.client.get("/api/v1/billing/usage").json()
    daily = owner.client.get("/api/v1/billing/usage/daily").json()

    assert summary["is_current"] is True
    assert summary["usage"] == [{"meter": "output_tokens", "dimension": "", "unit": "token", "quantity": "1250000.000000"}]
    assert summary["cost_so_far_minor"] == 60  # 1,000,000 past the allowance at 60 cents a million
    assert summary["forecast_minor"] >= summary["cost_so_far_minor"]
    assert [(day["meter"], day["quantity"]) for day in daily] == [("output_tokens", "1250000.000000")]


def test_invoices_list_detail_and_renderings(owner):
    from lode.billing.models import BillingAccount
    from tenants.db_context import tenant_atomic

    services.account_ensure(tenant_id=owner.id)
    with tenant_atomic(owner.id):
        BillingAccount.objects.filter(tenant_id=owner.id).update(closed_through=month(2026, 10))
        Subscription.objects.filter(tenant_id=owner.id).update(starts_at=month(2026, 10))
    services.usage_record(tenant_id=owner.id, events=[usage("output_tokens", 10_250_000, dimension="small", at=month(2026, 10, 3))])
    invoice = services.invoice_close(tenant_id=owner.id, period_start=month(2026, 10))

    listed = owner.client.get("/api/v1/billing/invoices").json()
    detail = owner.client.get(f"/api/v1/billing/invoices/{invoice.id}").json()
    html = owner.client.get(f"/api/v1/billing/invoices/{invoice.id}/html")
    pdf = owner.client.get(f"/api/v1/billing/invoices/{invoice.id}/pdf")

    assert [item["number"] for item in listed["results"]] == [invoice.number]
    assert detail["total_minor"] == 600 and detail["lines"][0]["amount_minor"] == 600
    assert html.status_code == 200 and invoice.number in html.content.decode()
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF") and pdf["Content-Type"] == "application/pdf"


def test_billing_is_refused_to_roles_without_billing_rights(make_tenant, api_client_for):
    owner = make_tenant()
    read_only = api_client_for(owner.user, scopes=["billing:read"])

    assert read_only.get("/api/v1/billing/usage").status_code == 200
    refused = read_only.post("/api/v1/billing/quotas", {"meter": "images", "kind": "hard", "limit": "1"}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["details"]["required"] == "billing:write"


def test_plans_and_meters_are_listed(owner):
    plans = owner.client.get("/api/v1/billing/plans").json()
    meters = owner.client.get("/api/v1/billing/meters").json()

    assert [plan["code"] for plan in plans] == ["developer", "startup", "prepaid"]
    startup = plans[1]
    assert startup["base_fee_minor"] == 4900
    tokens = next(price for price in startup["prices"] if price["meter"] == "input_tokens")
    assert tokens["tiers"] == [{"up_to": "500000000", "unit_price": "15"}, {"up_to": None, "unit_price": "10"}]
    assert {meter["name"] for meter in meters} == {"gpu_seconds", "input_tokens", "output_tokens", "images",
                                                  "storage_byte_hours", "labeled_tasks", "moderation_reviews"}
