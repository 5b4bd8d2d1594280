"""Billing pages through Django's test client: the period overview and its usage chart, quotas
and spend limits, the plan page and plan change, invoices and their HTML and PDF downloads, each
checked against the role's permissions; and the invoice documents themselves."""
from __future__ import annotations

import json
import re
import uuid
import zlib
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from lode.billing import rendering, selectors, services
from lode.core.errors import NotFound
from tenants.models import AuditEvent, Organization
from tenants.services import invitation_accept, invitation_create
from tests.conftest import rows
from tests.dashboard.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db


def _member(owner, role: str) -> Client:
    """A signed-in client of a new member of the owner's organization with `role` (their only one)."""
    user = get_user_model().objects.create_user(f"{role}-{uuid.uuid4().hex[:6]}@example.com", PASSWORD)
    sent = invitation_create(tenant_id=owner.organization.id, invited_by=owner.user, email=user.email, role=role)
    invitation_accept(token=sent.token, user=user)
    return client_for(user)


def _html(response) -> str:
    return response.content.decode()


def month_start(months_ago: int) -> datetime:
    start, _ = selectors.period_bounds(timezone.now())
    for _ in range(months_ago):
        start, _ = selectors.period_bounds(start - timedelta(days=1))
    return start


def this_period(minutes_ago: int) -> datetime:
    """A moment a few minutes back, but inside the current period even just after it began."""
    return max(timezone.now() - timedelta(minutes=minutes_ago), month_start(0))


def organization_founded(signup, months_ago: int) -> None:
    """The organization signed up `months_ago` months back: billing (its first subscription)
    starts then. Set before anything opens its billing account."""
    Organization.objects.filter(id=signup.organization.id).update(created_at=month_start(months_ago) + timedelta(hours=1))


def tokens_record(signup, quantity: int, at: datetime, *, meter: str = "input_tokens") -> None:
    services.usage_record(tenant_id=signup.organization.id, events=[services.UsageInput(
        meter=meter, dimension="small", quantity=quantity, idempotency_key=f"test-{uuid.uuid4().hex}",
        source_type="request", source_id="r1", occurred_at=at,
    )])


def invoice_issue(signup, *, months_ago: int = 1, quantity: int = 10_000_000):
    """An issued invoice for the month `months_ago` back, through the real metering call and close."""
    start = month_start(months_ago)
    tokens_record(signup, quantity, start + timedelta(days=2, hours=3))
    return services.invoice_close(tenant_id=signup.organization.id, period_start=start)


@pytest.fixture
def ada_invoice(ada):
    organization_founded(ada, 1)
    return invoice_issue(ada)


def _quotas(signup) -> list:
    return selectors.quota_list(tenant_id=signup.organization.id)


def _json_script(html: str, element_id: str):
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S)
    assert match, f"no json_script {element_id}"
    return json.loads(match.group(1))


# --- PDF text, for assertions --------------------------------------------------------------------


def _pdf_unescape(literal: bytes) -> bytes:
    out, index = bytearray(), 0
    escapes = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("f"): b"\f"}
    while index < len(literal):
        byte = literal[index]
        if byte != 0x5C:
            out.append(byte)
            index += 1
            continue
        following = literal[index + 1]
        if following in escapes:
            out += escapes[following]
            index += 2
        elif 0x30 <= following <= 0x37:
            digits = re.match(rb"[0-7]{1,3}", literal[index + 1:index + 4]).group(0)
            out.append(int(digits, 8) & 0xFF)
            index += 1 + len(digits)
        else:
            out.append(following)
            index += 2
    return bytes(out)


def pdf_text(data: bytes) -> str:
    """The strings a PDF shows, one per text operator (enough for assertions, not a general
    extractor). Content streams are inflated; a string in an embedded font (fpdf2's DejaVu
    subsets, two-byte codes) is mapped back through that font's ToUnicode table, a core-font
    string is read as latin-1."""
    objects = {int(number): body for number, body in re.findall(rb"(\d+) 0 obj\s(.*?)endobj", data, re.S)}

    def stream(number: int) -> bytes:
        match = re.search(rb"stream\r?\n(.*?)\r?\nendstream", objects[number], re.S)
        raw = match.group(1) if match else b""
        return zlib.decompress(raw) if b"/FlateDecode" in objects[number] else raw

    def to_unicode(font: int) -> dict[int, str] | None:
        reference = re.search(rb"/ToUnicode (\d+) 0 R", objects[font])
        if reference is None:
            return None
        table = {}
        for block in re.findall(rb"beginbfchar(.*?)endbfchar", stream(int(reference.group(1))), re.S):
            for code, char in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                table[int(code, 16)] = chr(int(char, 16))
        return table

    fonts = {}
    for body in objects.values():
        for block in re.findall(rb"/Font\s*<<(.*?)>>", body, re.S):
            for name, number in re.findall(rb"/(\w+)\s+(\d+) 0 R", block):
                fonts[name] = to_unicode(int(number))
    pages = [number for number, body in objects.items() if re.search(rb"/Type /Page\b", body)]
    shown = []
    for page in pages:
        for contents in re.findall(rb"/Contents (\d+) 0 R", objects[page]):
            table = None
            operators = rb"/(\w+)\s+[\d.]+\s+Tf|\(((?:\\.|[^\\)])*)\)\s*Tj"
            for font, literal in re.findall(operators, stream(int(contents)), re.S):
                if font:
                    table = fonts.get(font)
                    continue
                raw = _pdf_unescape(literal)
                if table is None:
                    shown.append(raw.decode("latin-1"))
                else:
                    shown.append("".join(table.get(raw[i] << 8 | raw[i + 1], "?") for i in range(0, len(raw) - 1, 2)))
    return "\n".join(shown)


# --- Formatting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("minor, currency, expected", [
    (123456, "USD", "$1,234.56"),
    (5, "USD", "$0.05"),
    (0, "USD", "$0.00"),
    (-250, "USD", "-$2.50"),
    (123456, "CHF", "CHF 1,234.56"),
    (1234, "JPY", "¥1,234" if "JPY" in rendering.CURRENCY_SYMBOLS else "JPY 1,234"),
    (12345, "KWD", "KWD 12.345"),
])
def test_money_is_formatted_from_integer_minor_units(minor, currency, expected):
    assert rendering.money_format(minor, currency) == expected


def test_unit_prices_keep_digits_past_the_minor_unit():
    assert rendering.money_format(Decimal("0.2"), "USD", exact=True) == "$0.002"
    assert rendering.money_format(Decimal("15"), "USD", exact=True) == "$0.15"
    assert rendering.money_format(Decimal("0.00000001"), "USD", exact=True) == "$0.00"  # past EXTRA_PLACES


@pytest.mark.parametrize("value, expected", [
    (Decimal("10000000.000000"), "10,000,000"),
    (Decimal("1234.500000"), "1,234.5"),
    (Decimal("0.000001"), "0.000001"),
    (Decimal("1E+7"), "10,000,000"),
    (0, "0"),
])
def test_quantities_print_without_float_or_exponent(value, expected):
    assert rendering.quantity_format(value) == expected


def test_price_units_read_as_named_units_where_they_have_one():
    assert rendering.price_unit_text("gpu_seconds", 3600) == "GPU-hour"
    assert rendering.price_unit_text("input_tokens", 1_000_000) == "1,000,000 tokens"
    assert rendering.price_unit_text("moderation_reviews", 1) == "review"
    assert rendering.quantity_in_price_units("gpu_seconds", Decimal(36000), 3600) == "10 GPU-hours"


# --- Access ---------------------------------------------------------------------------------------

PAGES = ["dashboard:billing", "dashboard:billing-plans", "dashboard:billing-invoices"]


@pytest.mark.parametrize("name", PAGES)
def test_anonymous_user_is_sent_to_login(client: Client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and response["Location"].startswith(reverse("dashboard:login"))


@pytest.mark.parametrize("role", ["owner", "billing"])
def test_billing_writers_see_every_page_with_its_forms(ada, role):
    client = client_for(ada.user) if role == "owner" else _member(ada, role)
    for name in PAGES:
        response = client.get(reverse(name))
        assert response.status_code == 200, (name, response.status_code)
        html = _html(response)
        assert '<a href="/billing/" aria-current="page">Billing</a>' in html
    overview = _html(client.get(reverse("dashboard:billing")))
    assert 'id="quota-form"' in overview and 'id="spend-limits-form"' in overview
    assert "Switch to Startup" in _html(client.get(reverse("dashboard:billing-plans")))


def test_an_admin_reads_billing_but_changes_nothing(ada):
    admin = _member(ada, "admin")
    overview = admin.get(reverse("dashboard:billing"))
    assert overview.status_code == 200
    assert 'id="quota-form"' not in _html(overview) and 'id="spend-limits-form"' not in _html(overview)
    assert "Switch to" not in _html(admin.get(reverse("dashboard:billing-plans")))

    refused = admin.post(reverse("dashboard:billing"), {"form": "quota", "meter": "images", "kind": "hard", "limit": "5"})
    changed = admin.post(reverse("dashboard:billing-plans"), {"plan": "startup", "when": "now"})

    for response in (refused, changed):
        assert response.status_code == 403 and "billing:write" in _html(response)
    assert _quotas(ada) == []
    assert selectors.subscription_current(tenant_id=ada.organization.id).plan_version.plan.code == "developer"


@pytest.mark.parametrize("role", ["engineer", "annotator"])
def test_roles_without_billing_get_403_naming_billing_read_and_no_nav_entry(ada, ada_invoice, role):
    client = _member(ada, role)
    urls = [reverse(name) for name in PAGES] + [
        reverse("dashboard:billing-invoice-html", kwargs={"invoice_id": ada_invoice.id}),
        reverse("dashboard:billing-invoice-pdf", kwargs={"invoice_id": ada_invoice.id}),
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 403, url
        assert 'data-testid="missing-permission">billing:read<' in _html(response)
        assert ada_invoice.number not in _html(response)
    assert 'href="/billing/"' not in _html(client.get(reverse("dashboard:home")))


# --- Overview -------------------------------------------------------------------------------------


def test_overview_shows_the_period_cost_plan_and_a_chart_with_one_dataset_per_meter(ada, ada_client):
    tokens_record(ada, 3_000_000, this_period(5))
    tokens_record(ada, 2_000_000, this_period(4))
    tokens_record(ada, 400_000, this_period(3), meter="output_tokens")
    now = timezone.now()

    response = ada_client.get(reverse("dashboard:billing"))

    assert response.status_code == 200
    html = _html(response)
    summary = selectors.period_summary(tenant_id=ada.organization.id)
    assert rendering.money_format(summary.cost_so_far_minor, "USD") in html
    assert summary.cost_so_far_minor == 80 + 9  # 4M tokens past the 1M allowance at 20c/M; 150k at 60c/M
    assert 'data-testid="current-plan">Developer<' in html
    chart = _json_script(html, "usage-chart-data")
    assert chart["labels"][0] == selectors.period_bounds(now)[0].date().isoformat()
    assert chart["labels"][-1] == now.date().isoformat()
    by_meter = {dataset["meter"]: dataset["data"] for dataset in chart["datasets"]}
    assert set(by_meter) == {"input_tokens", "output_tokens"}
    assert by_meter["input_tokens"][-1] == 5_000_000 and sum(by_meter["input_tokens"]) == 5_000_000
    assert by_meter["output_tokens"][-1] == 400_000
    assert 'data-usage-chart="usage-chart-data"' in html
    assert "Input tokens (tokens)" in html and "Output tokens (tokens)" in html


def test_overview_without_usage_says_so_and_draws_no_chart(ada_client):
    html = _html(ada_client.get(reverse("dashboard:billing")))
    assert "No usage recorded this period yet." in html
    assert "usage-chart-data" not in html


def test_overview_lists_credit_grants_and_the_balance(ada, ada_client):
    services.credit_grant(tenant_id=ada.organization.id, amount_minor=2500, reason="Welcome credit")
    html = _html(ada_client.get(reverse("dashboard:billing")))
    assert "Welcome credit" in html
    assert 'data-testid="credit-balance">$25.00<' in html


def test_a_post_naming_no_known_form_is_a_400(ada_client):
    response = ada_client.post(reverse("dashboard:billing"), {})
    assert response.status_code == 400
    assert "unknown form" in _html(response)


# --- Quotas ---------------------------------------------------------------------------------------


def test_the_quota_form_sets_a_quota_and_the_page_shows_its_use(ada, ada_client):
    tokens_record(ada, 250_000, this_period(1))
    response = ada_client.post(reverse("dashboard:billing"), {
        "form": "quota", "meter": "input_tokens", "dimension": "small", "kind": "hard", "limit": "1000000",
    })
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:billing")

    [quota] = _quotas(ada)
    assert (quota.meter, quota.dimension, quota.kind, quota.limit) == ("input_tokens", "small", "hard", Decimal(1_000_000))
    html = _html(ada_client.get(reverse("dashboard:billing")))
    row = re.search(r'<tr data-quota="input_tokens:small:hard">(.*?)</tr>', html, re.S).group(1)
    assert "250,000" in row and "1,000,000" in row and "25%" in row

    # The same meter, dimension and kind again replaces it.
    ada_client.post(reverse("dashboard:billing"), {
        "form": "quota", "meter": "input_tokens", "dimension": "small", "kind": "hard", "limit": "2000000",
    })
    assert [quota.limit for quota in _quotas(ada)] == [Decimal(2_000_000)]


@pytest.mark.parametrize("limit, message", [
    ("-5", "greater than or equal to 0"),
    ("lots", "Enter a number"),
    ("1.1234567", "no more than 6 decimal places"),
])
def test_a_bad_quota_limit_shows_the_error_and_writes_nothing(ada, ada_client, limit, message):
    response = ada_client.post(reverse("dashboard:billing"), {
        "form": "quota", "meter": "images", "dimension": "", "kind": "soft", "limit": limit,
    })
    assert response.status_code == 400
    html = _html(response)
    assert message in html and 'class="field-error"' in html
    assert f'value="{limit}"' in html  # the form keeps what was typed
    assert _quotas(ada) == []
    assert rows(AuditEvent, ada.organization.id, action="billing.quota_set") == []


def test_a_dimension_the_meter_does_not_have_shows_the_services_error_on_the_field(ada, ada_client):
    response = ada_client.post(reverse("dashboard:billing"), {
        "form": "quota", "meter": "labeled_tasks", "dimension": "small", "kind": "hard", "limit": "10",
    })
    assert response.status_code == 400
    assert "meter labeled_tasks has no dimensions" in _html(response)
    assert _quotas(ada) == []


def test_removing_a_quota(ada, ada_client):
    quota = services.quota_set(tenant_id=ada.organization.id, meter="images", kind="hard", limit=10)
    response = ada_client.post(reverse("dashboard:billing-quota-delete", kwargs={"quota_id": quota.id}))
    assert response.status_code == 302
    assert _quotas(ada) == []
    assert "Quota removed." in _html(ada_client.get(reverse("dashboard:billing")))


def test_another_tenants_quota_cannot_be_removed(ada, grace):
    theirs = services.quota_set(tenant_id=grace.organization.id, meter="images", kind="hard", limit=10)
    client = client_for(ada.user)
    response = client.post(reverse("dashboard:billing-quota-delete", kwargs={"quota_id": theirs.id}))
    assert response.status_code == 302
    assert "No such quota." in _html(client.get(reverse("dashboard:billing")))
    assert [quota.id for quota in _quotas(grace)] == [theirs.id]


# --- Spend limits ---------------------------------------------------------------------------------


def test_spend_limits_are_saved_in_minor_units_and_shown(ada, ada_client):
    response = ada_client.post(reverse("dashboard:billing"), {"form": "spend-limits", "hard": "100.50", "soft": "75"})
    assert response.status_code == 302
    account = selectors.account_get(tenant_id=ada.organization.id)
    assert (account.spend_limit_minor, account.soft_spend_limit_minor) == (10050, 7500)
    html = _html(ada_client.get(reverse("dashboard:billing")))
    assert 'data-testid="spend-limit">$100.50<' in html and 'data-testid="soft-spend-limit">$75.00<' in html
    assert 'value="100.50"' in html  # prefilled in major units

    ada_client.post(reverse("dashboard:billing"), {"form": "spend-limits", "hard": "", "soft": ""})
    account = selectors.account_get(tenant_id=ada.organization.id)
    assert (account.spend_limit_minor, account.soft_spend_limit_minor) == (None, None)


@pytest.mark.parametrize("hard", ["-1", "1.234", "ten"])
def test_a_bad_spend_limit_shows_the_error_and_writes_nothing(ada, ada_client, hard):
    response = ada_client.post(reverse("dashboard:billing"), {"form": "spend-limits", "hard": hard, "soft": "5"})
    assert response.status_code == 400
    assert 'class="field-error"' in _html(response)
    account = selectors.account_get(tenant_id=ada.organization.id)
    assert (account.spend_limit_minor, account.soft_spend_limit_minor) == (None, None)


# --- Plans ----------------------------------------------------------------------------------------


def test_plans_page_shows_public_plans_prices_readably_and_marks_the_current_one(ada_client):
    html = _html(ada_client.get(reverse("dashboard:billing-plans")))
    for name in ("Developer", "Startup", "Prepaid"):
        assert f'id="plan-{name.lower()}">{name}<' in html
    developer = re.search(r'data-plan="developer"(.*?)</section>', html, re.S).group(1)
    startup = re.search(r'data-plan="startup"(.*?)</section>', html, re.S).group(1)
    assert 'data-testid="current-plan-badge"' in developer and "current-plan-badge" not in startup
    assert "$0.20 per 1,000,000 tokens" in developer
    assert "10 GPU-hours" in developer and "per GPU-hour" in developer
    assert "$49.00</strong> a month" in startup
    assert "$0.15 per 1,000,000 tokens for the first 500,000,000 tokens" in startup
    assert "then $0.10 per 1,000,000 tokens" in startup
    assert "$3.00 per GPU-hour for the first 100 GPU-hours" in startup  # bounds in the unit of the price
    assert "Switch to Developer" not in html and "Switch to Startup" in html


def test_changing_plan_now_creates_the_subscription(ada, ada_client):
    response = ada_client.post(reverse("dashboard:billing-plans"), {"plan": "startup", "when": "now"})
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:billing-plans")

    current = selectors.subscription_current(tenant_id=ada.organization.id)
    assert current.plan_version.plan.code == "startup"
    assert current.created_by_id == ada.user.pk
    html = _html(ada_client.get(reverse("dashboard:billing-plans")))
    assert "You are on the Startup plan from now on." in html
    assert 'data-testid="current-plan-badge"' in re.search(r'data-plan="startup"(.*?)</section>', html, re.S).group(1)
    assert rows(AuditEvent, ada.organization.id, action="billing.plan_changed")


def test_changing_plan_from_next_month_schedules_it_and_can_be_cancelled(ada, ada_client):
    ada_client.post(reverse("dashboard:billing-plans"), {"plan": "startup", "when": "next_period"})

    assert selectors.subscription_current(tenant_id=ada.organization.id).plan_version.plan.code == "developer"
    _, next_period = selectors.period_bounds(timezone.now())
    later = selectors.subscription_current(tenant_id=ada.organization.id, at=next_period)
    assert later.plan_version.plan.code == "startup" and later.starts_at == next_period
    html = _html(ada_client.get(reverse("dashboard:billing")))
    assert "Moving to the <strong>Startup</strong> plan" in html

    ada_client.post(reverse("dashboard:billing-plans"), {"plan": "developer", "when": "now"})
    later = selectors.subscription_current(tenant_id=ada.organization.id, at=next_period)
    assert later.plan_version.plan.code == "developer"


@pytest.mark.parametrize("body", [{"plan": "no-such-plan", "when": "now"}, {"plan": "startup", "when": "yesterday"}, {}])
def test_a_bad_plan_change_shows_the_error_and_changes_nothing(ada, ada_client, body):
    services.account_ensure(tenant_id=ada.organization.id)
    response = ada_client.post(reverse("dashboard:billing-plans"), body)
    assert response.status_code == 400
    assert 'id="plan-change-errors"' in _html(response)
    assert selectors.subscription_current(tenant_id=ada.organization.id).plan_version.plan.code == "developer"


# --- Invoices -------------------------------------------------------------------------------------


def test_invoice_list_shows_number_period_status_total_and_download_links(ada, ada_client, ada_invoice):
    html = _html(ada_client.get(reverse("dashboard:billing-invoices")))
    assert ada_invoice.number and ada_invoice.number in html
    assert selectors.period_label(ada_invoice.period_start) in html
    assert rendering.money_format(ada_invoice.total_minor, "USD") in html
    assert f'href="/billing/invoices/{ada_invoice.id}/html"' in html
    assert f'href="/billing/invoices/{ada_invoice.id}/pdf" download' in html


def test_invoice_list_queries_do_not_grow_with_invoices(ada, ada_client):
    organization_founded(ada, 3)
    invoice_issue(ada, months_ago=3)
    with CaptureQueriesContext(connection) as one:
        ada_client.get(reverse("dashboard:billing-invoices"))
    invoice_issue(ada, months_ago=2)
    invoice_issue(ada, months_ago=1)
    with CaptureQueriesContext(connection) as three:
        response = ada_client.get(reverse("dashboard:billing-invoices"))
    assert _html(response).count("data-invoice-id=") == 3
    assert len(three) == len(one)


def test_the_invoice_html_shows_number_lines_and_total_and_runs_nothing(ada, ada_client, ada_invoice):
    assert ada_invoice.total_minor == 180  # 10M tokens, 1M included, 20c per 1M
    response = ada_client.get(reverse("dashboard:billing-invoice-html", kwargs={"invoice_id": ada_invoice.id}))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in response["Content-Security-Policy"]
    assert response["Content-Disposition"] == f'inline; filename="{ada_invoice.number}.html"'
    html = _html(response)
    assert f'data-testid="invoice-number">{ada_invoice.number}<' in html
    assert 'data-testid="invoice-total">$1.80<' in html
    assert "Analytical Engines" in html and "ada@example.com" in html
    assert "10,000,000" in html and "9,000,000" in html
    assert "9,000,000 tokens at $0.20 per 1,000,000 tokens" in html  # the tier breakdown
    assert "<script" not in html and "<link" not in html and "src=" not in html


def test_the_invoice_pdf_is_an_attachment_with_the_number_and_total(ada, ada_client, ada_invoice):
    url = reverse("dashboard:billing-invoice-pdf", kwargs={"invoice_id": ada_invoice.id})
    response = ada_client.get(url)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'attachment; filename="{ada_invoice.number}.pdf"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response["Cache-Control"]
    body = response.content
    assert body.startswith(b"%PDF-") and body.rstrip().endswith(b"%%EOF") and len(body) > 2000
    text = pdf_text(body)
    assert ada_invoice.number in text
    assert "$1.80" in text and "Analytical Engines" in text
    assert f"/Title (Invoice {ada_invoice.number})".encode() in body
    # The same invoice gives the same bytes.
    assert ada_client.get(url).content == body


def test_another_tenants_invoice_is_the_same_404_as_a_missing_one(ada_invoice, grace):
    client = client_for(grace.user)
    for name in ("dashboard:billing-invoice-html", "dashboard:billing-invoice-pdf"):
        foreign = client.get(reverse(name, kwargs={"invoice_id": ada_invoice.id}))
        missing = client.get(reverse(name, kwargs={"invoice_id": uuid.uuid4()}))
        assert foreign.status_code == missing.status_code == 404
        assert ada_invoice.number not in _html(foreign)
        assert "No such invoice." in _html(foreign) and "No such invoice." in _html(missing)
    assert ada_invoice.number not in _html(client.get(reverse("dashboard:billing-invoices")))


def test_rendering_raises_not_found_for_another_tenantsinvoice_issue(ada_invoice, grace):
    with pytest.raises(NotFound):
        rendering.invoice_html(tenant_id=grace.organization.id, invoice_id=ada_invoice.id)
    with pytest.raises(NotFound):
        rendering.invoice_pdf(tenant_id=grace.organization.id, invoice_id=ada_invoice.id)


def test_the_invoice_shows_credit_and_tax_when_there_are_some(ada):
    organization_founded(ada, 1)
    services.account_ensure(tenant_id=ada.organization.id)
    from lode.billing.models import BillingAccount, CreditGrant
    from tenants.db_context import tenant_atomic

    with tenant_atomic(ada.organization.id):
        BillingAccount.objects.filter(tenant_id=ada.organization.id).update(
            tax_rate=Decimal("0.2000"), tax_label="VAT", billing_email="accounts@engines.example")
    grant = services.credit_grant(tenant_id=ada.organization.id, amount_minor=50, reason="Welcome")
    with tenant_atomic(ada.organization.id):  # granted last month, so last month's invoice may draw on it
        CreditGrant.objects.filter(id=grant.id).update(granted_at=month_start(1))
    invoice = invoice_issue(ada)

    html = rendering.invoice_html(tenant_id=ada.organization.id, invoice_id=invoice.id)
    text = pdf_text(rendering.invoice_pdf(tenant_id=ada.organization.id, invoice_id=invoice.id))

    assert (invoice.subtotal_minor, invoice.credits_applied_minor, invoice.tax_minor, invoice.total_minor) == (180, 50, 26, 156)
    for document in (html, text):
        assert "Credits applied" in document and "-$0.50" in document
        assert "VAT (20%)" in document and "$0.26" in document
        assert "$1.56" in document
        assert "accounts@engines.example" in document
        assert "ada@example.com" not in document


def test_the_pdf_falls_back_to_a_core_font_and_latin_1_without_dejavu(ada, monkeypatch):
    Organization.objects.filter(id=ada.organization.id).update(name="Łódź Ångström — AI ✓")
    organization_founded(ada, 1)
    invoice = invoice_issue(ada)

    with_dejavu = pdf_text(rendering.invoice_pdf(tenant_id=ada.organization.id, invoice_id=invoice.id))
    monkeypatch.setattr(rendering, "_unicode_fonts", lambda: None)
    body = rendering.invoice_pdf(tenant_id=ada.organization.id, invoice_id=invoice.id)

    assert "Łódź Ångström — AI ✓" in with_dejavu
    assert body.startswith(b"%PDF-") and b"/Helvetica" in body
    text = pdf_text(body)
    assert "?ód? Ångström - AI ?" in text and invoice.number in text
