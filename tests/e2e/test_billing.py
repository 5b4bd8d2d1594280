"""Billing pages end to end in headless Chromium: the usage chart draws with the vendored Chart.js,
a quota set through the form shows in the page, and an invoice opens as HTML and downloads as a
PDF."""
from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from lode.billing import rendering
from tenants.services import user_signup
from tests.dashboard.test_billing_pages import invoice_issue, organization_founded, pdf_text, this_period, tokens_record

PASSWORD = "violet-harbour-lantern-42"

pytestmark = pytest.mark.e2e

# Painted pixels of the usage chart's canvas (alpha > 0): the axes, legend and lines drawn.
CANVAS_PAINTED = """() => {
  const canvas = document.getElementById('usage-chart');
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
  return painted;
}"""


@pytest.fixture
def ada():
    return user_signup(email="ada@example.com", password=PASSWORD, organization_name="Analytical Engines")


def test_billing_chart_quota_and_invoice_downloads(live_server, log_in, ada, tmp_path: Path):
    organization_founded(ada, 1)
    invoice = invoice_issue(ada)
    tokens_record(ada, 3_000_000, this_period(5))
    tokens_record(ada, 400_000, this_period(4), meter="output_tokens")

    page = log_in(ada.user.email, PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Billing").click()
    expect(page).to_have_url(f"{live_server.url}/billing/")

    # The chart: one dataset per meter, drawn on the canvas.
    expect(page.get_by_role("img", name="Usage per meter per day")).to_be_visible()
    page.wait_for_function("() => Chart.getChart(document.getElementById('usage-chart'))?.data.datasets.length === 2")
    totals = page.evaluate(
        "() => Object.fromEntries(Chart.getChart(document.getElementById('usage-chart')).data.datasets"
        ".map(d => [d.label, d.data.reduce((sum, value) => sum + (value || 0), 0)]))"
    )
    assert totals == {"Input tokens (tokens)": 3_000_000, "Output tokens (tokens)": 400_000}
    assert page.evaluate(CANVAS_PAINTED) > 1000

    # A quota through the form.
    form = page.locator("#quota-form")
    form.get_by_label("Meter").select_option("images")
    form.get_by_label("Kind").select_option("hard")
    form.get_by_label("Limit per month").fill("250")
    form.get_by_role("button", name="Save quota").click()
    expect(page.get_by_role("status")).to_contain_text("Hard quota on Images (images) set to 250 per month.")
    expect(page.locator('tr[data-quota="images::hard"]')).to_contain_text("250")

    # The invoice: listed, opened as a printable page, downloaded as a PDF.
    page.get_by_role("navigation", name="Billing").get_by_role("link", name="Invoices").click()
    row = page.locator(f'tr[data-invoice-id="{invoice.id}"]')
    expect(row).to_contain_text(invoice.number)
    expect(row).to_contain_text("$1.80")

    row.get_by_role("link", name=f"View invoice {invoice.number}").click()
    expect(page).to_have_url(f"{live_server.url}/billing/invoices/{invoice.id}/html")
    expect(page.get_by_test_id("invoice-number")).to_have_text(invoice.number)
    expect(page.get_by_test_id("invoice-total")).to_have_text("$1.80")
    page.go_back()

    with page.expect_download() as started:
        page.get_by_role("link", name=f"Download invoice {invoice.number} as PDF").click()
    download = started.value
    assert download.suggested_filename == f"{invoice.number}.pdf"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    body = saved.read_bytes()
    assert body.startswith(b"%PDF-")
    assert invoice.number in pdf_text(body)
    assert body == rendering.invoice_pdf(tenant_id=ada.organization.id, invoice_id=invoice.id)
