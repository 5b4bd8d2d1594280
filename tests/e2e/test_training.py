"""A fine-tune's page in headless Chromium: the loss and evaluation curves draw with the vendored
Chart.js, and a metric the worker reports shows up on the page without a reload (htmx polling)."""
from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import expect

from lode.core.jobs.services import job_claim, job_create, job_event_add
from lode.training.hyperparameters import DEFAULTS, METHOD_DEFAULTS, TASK_DEFAULTS
from lode.training.services import FINETUNE_KIND
from tenants.services import user_signup

PASSWORD = "violet-harbour-lantern-42"
WORKER = "e2e-worker"

pytestmark = pytest.mark.e2e


@pytest.fixture
def ada():
    return user_signup(email="ada@example.com", password=PASSWORD, organization_name="Analytical Engines")


def _running_finetune(signup):
    """A fine-tune job as finetune_create writes it (no base model or data needed to show its page),
    claimed at once so the Celery message sent on commit finds nothing to do."""
    params = {
        "base_model": "tiny-gpt2", "task": "sft", "method": "lora", "train_version_id": str(uuid.uuid4()),
        "validation_version_id": None, "hyperparameters": {**DEFAULTS, **TASK_DEFAULTS["sft"], **METHOD_DEFAULTS["lora"]},
        "suffix": "", "gpus": 1,
        "estimate": {"tokens": 1000, "seconds": 40.0, "gpu_seconds": 40.0, "gpu_class": "cpu", "tokens_per_second": 100.0},
    }
    job = job_create(tenant_id=signup.organization.id, created_by=signup.user, kind=FINETUNE_KIND, params=params)
    job_claim(tenant_id=job.tenant_id, job_id=job.id, worker=WORKER, heartbeat_timeout=3600)
    return job


def _chart_points(page, canvas_id: str) -> list[int]:
    return page.evaluate(
        "(id) => { const chart = Chart.getChart(document.getElementById(id));"
        " return chart ? chart.data.datasets.map((set) => set.data.length) : null; }", canvas_id)


def test_the_fine_tune_page_draws_its_curves_and_follows_new_metrics(live_server, log_in, ada):
    job = _running_finetune(ada)
    for step, loss in ((10, 2.5), (20, 1.75), (30, 1.25)):
        job_event_add(job=job, kind="metric", message=f"step {step}",
                      data={"kind": "train", "step": step, "loss": loss, "learning_rate": 0.0002})
    job_event_add(job=job, kind="metric", message="eval at step 20",
                  data={"kind": "eval", "step": 20, "val_loss": 1.9, "perplexity": 6.7})

    page = log_in(ada.user.email, PASSWORD)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Fine-tunes").click()
    page.locator(f'tr[data-job-id="{job.id}"] a').first.click()
    expect(page.get_by_role("img", name="Training loss by step")).to_be_visible()
    expect(page.get_by_role("img", name="Evaluation metrics by step")).to_be_visible()
    assert _chart_points(page, "loss-chart") == [3]
    assert _chart_points(page, "eval-chart-canvas") == [1, 1]  # val_loss and perplexity
    # The canvas holds a drawing: some pixels are not blank.
    assert page.evaluate(
        "() => { const c = document.getElementById('loss-chart'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; for (let i = 3; i < d.length; i += 4) if (d[i]) return true;"
        " return false; }")
    expect(page.locator("#finetune-live")).to_have_attribute("data-polling", "true")

    # The worker reports another step and an evaluation: the next poll redraws both charts.
    job_event_add(job=job, kind="metric", message="step 40", data={"kind": "train", "step": 40, "loss": 1.0})
    job_event_add(job=job, kind="metric", message="eval at step 40",
                  data={"kind": "eval", "step": 40, "val_loss": 1.5, "perplexity": 4.5})
    expect(page.get_by_role("cell", name="step 40", exact=True)).to_be_visible()
    page.wait_for_function("() => Chart.getChart(document.getElementById('loss-chart'))?.data.datasets[0].data.length === 4")
    assert _chart_points(page, "eval-chart-canvas") == [2, 2]
