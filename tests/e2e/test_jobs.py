"""Live job pages in headless Chromium: htmx polling picks up progress and failure without a
reload; the loss chart draws with the vendored Chart.js."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from lode.core.jobs.services import job_claim, job_create, job_event_add, job_fail, job_progress_set
from tenants.services import user_signup

PASSWORD = "violet-harbour-lantern-42"
WORKER = "e2e-worker"

pytestmark = pytest.mark.e2e


@pytest.fixture
def ada():
    return user_signup(email="ada@example.com", password=PASSWORD, organization_name="Analytical Engines")


def _running_job(signup):
    # Claimed at once, so the Celery message sent on commit finds nothing to do if a worker sees it.
    job = job_create(tenant_id=signup.organization.id, created_by=signup.user, kind="core.ping", params={})
    job_claim(tenant_id=job.tenant_id, job_id=job.id, worker=WORKER, heartbeat_timeout=3600)
    return job


def test_jobs_table_follows_progress_and_failure_without_reload(live_server, log_in, ada):
    job = _running_job(ada)
    page = log_in(ada.user.email, PASSWORD)
    page.get_by_role("link", name="Jobs", exact=True).click()
    row = page.locator(f'tr[data-job-id="{job.id}"]')
    expect(row).to_contain_text("Running")
    expect(page.locator("#jobs-table")).to_have_attribute("data-polling", "true")

    job_progress_set(tenant_id=job.tenant_id, job_id=job.id, worker=WORKER, progress=0.5, message="halfway")
    expect(row).to_contain_text("50%")
    expect(row).to_contain_text("halfway")

    job_fail(tenant_id=job.tenant_id, job_id=job.id, worker=WORKER, error="disk on fire", code="test")
    expect(row).to_contain_text("Failed")
    expect(row).to_contain_text("disk on fire")
    expect(page.locator("#jobs-table")).to_have_attribute("data-polling", "false")


def test_job_page_draws_the_loss_chart(live_server, log_in, ada):
    job = _running_job(ada)
    for step, loss in ((1, 2.5), (2, 1.75), (3, 1.25)):
        job_event_add(job=job, kind="metric", message=f"step {step}", data={"step": step, "loss": loss})
    page = log_in(ada.user.email, PASSWORD)
    page.goto(f"{live_server.url}/jobs/{job.id}/")
    expect(page.get_by_role("img", name="Loss by step")).to_be_visible()
    points = page.evaluate(
        "() => Chart.getChart(document.getElementById('loss-chart')).data.datasets[0].data.length"
    )
    assert points == 3

    # A new metric arrives: the next poll redraws the chart with it.
    job_event_add(job=job, kind="metric", message="step 4", data={"step": 4, "loss": 1.0})
    expect(page.get_by_role("cell", name="step 4", exact=True)).to_be_visible()
    page.wait_for_function(
        "() => Chart.getChart(document.getElementById('loss-chart'))?.data.datasets[0].data.length === 4"
    )
