"""Training pages through Django's test client: the fine-tunes list and the start form, a fine-tune
with its progress, curves, events, checkpoints, estimate and cancel button, the model registry and
a model's card page; each checked against the role's permissions and against another tenant's ids.

Fine-tunes are created through the real finetune_create (a tiny registered base model, a ready
dataset version made through the real ingest); their training is played here through the job
services (claim, progress, metric events, checkpoint records, success) and the model is registered
through tuned_model_register, so the pages are tested without a worker."""
from __future__ import annotations

import html as html_lib
import json
import re
import uuid
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

import tenants.context
from lode.core.jobs.services import job_claim, job_event_add, job_progress_set, job_succeed
from lode.core.models import Job
from lode.dashboard.training_views import hyperparameter_help, metric_series
from lode.training import services as training_services
from lode.training.selectors import base_model_get
from lode.training.models import TunedModel
from tenants.models import AuditEvent
from tenants.services import invitation_accept, invitation_create
from tests.conftest import rows
from tests.dashboard.conftest import PASSWORD, client_for
from tests.dashboard.test_dataset_pages import dataset_make, ready_version
from tests.training.conftest import base_models, instruction_rows  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db

WORKER = "page-test-worker"
BASE = "tiny-gpt2"


def _member(owner, role: str) -> Client:
    """A signed-in client of a new member of the owner's organization with `role` (their only one)."""
    user = get_user_model().objects.create_user(f"{role}-{uuid.uuid4().hex[:6]}@example.com", PASSWORD)
    sent = invitation_create(tenant_id=owner.organization.id, invited_by=owner.user, email=user.email, role=role)
    invitation_accept(token=sent.token, user=user)
    return client_for(user)


def _html(response) -> str:
    return response.content.decode()


def _json_script(html: str, element_id: str):
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S)
    assert match, f"no json_script {element_id}"
    return json.loads(match.group(1))


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


def _jobs(signup) -> list[Job]:
    return rows(Job, signup.organization.id, tenant_id__exact=signup.organization.id, kind="training.finetune")


# --- Data through the real services ------------------------------------------------------------------


@pytest.fixture
def catalog(base_models):  # noqa: F811 (the imported fixture)
    return base_models(BASE)[BASE]


def _version(signup, *, name: str, count: int, seed: int = 0):
    """A ready instruction version, built in-process (tests.dashboard.test_dataset_pages): the
    ingest job's runner (tests.training.conftest.version_from_rows) closes the connection, which
    a test inside a transaction cannot survive."""
    return ready_version(signup, instruction_rows(count, seed=seed), dataset=dataset_make(signup, name=name))


@pytest.fixture
def ada_version(ada):
    return _version(ada, name="support", count=24)


def _finetune(signup, version, **overrides) -> Job:
    fields = {"base_model": BASE, "train_version_id": version.id, "hyperparameters": {"epochs": 1, "max_steps": 20}}
    return training_services.finetune_create(tenant_id=signup.organization.id, by=signup.user, **{**fields, **overrides})


def _run(job: Job, *, steps: int = 3, evals: bool = True) -> None:
    """Plays a worker's part: claims the job and reports progress, train metrics, evaluations and
    checkpoints, as workers/training/finetune.py does."""
    job_claim(tenant_id=job.tenant_id, job_id=job.id, worker=WORKER, heartbeat_timeout=3600)
    for step in range(1, steps + 1):
        job_event_add(job=job, kind="metric", message=f"step {step}", data={
            "kind": "train", "step": step * 10, "epoch": step / steps, "loss": round(3.0 - step * 0.5, 3),
            "learning_rate": 0.0002, "tokens_per_second": 1234.4, "grad_norm": 0.75})
        if evals:
            job_event_add(job=job, kind="metric", message=f"eval at step {step * 10}", data={
                "kind": "eval", "step": step * 10, "epoch": step / steps, "val_loss": round(3.2 - step * 0.4, 3),
                "perplexity": round(2.0 + 10 / step, 3)})
        training_services.checkpoint_record(
            tenant_id=job.tenant_id, job_id=job.id, step=step * 10, key=f"fine-tunes/{job.id}/checkpoints/step-{step * 10:07d}.pt",
            size_bytes=2048 * step, summary={"epoch": step, "tokens": step * 100, "best_val_loss": 1.5, "reason": "every_steps"})
    job_progress_set(tenant_id=job.tenant_id, job_id=job.id, worker=WORKER, progress=0.5,
                     message="step 30 of 60, loss 1.5")


def _register(signup, job: Job, version, tmp_path: Path, *, name: str = "support-bot", card: str = "# support-bot\n",
              **fields) -> TunedModel:
    folder = tmp_path / uuid.uuid4().hex
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    base = base_model_get(name=BASE)
    values = {
        "name": name, "base_model": base, "task": "sft", "task_type": "causal_lm", "method": "lora",
        "architecture": base.architecture, "parameter_count": 120_000, "trainable_parameter_count": 4_096,
        "is_adapter": True, "merged": False, "train_version_id": version.id, "validation_version_id": None,
        "hyperparameters": {"epochs": 1, "learning_rate": 0.0002, "lora_target_modules": ["c_attn"]},
        "metrics": {"val_loss": 1.2345, "perplexity": 3.4367, "bleu": 12.5, "steps": 30}, "labels": [],
        "model_card": card, **fields,
    }
    return training_services.tuned_model_register(tenant_id=signup.organization.id, job_id=job.id, model_id=uuid.uuid4(),
                                                  local_dir=folder, fields=values)


def _succeed(job: Job, model: TunedModel) -> None:
    job_succeed(tenant_id=job.tenant_id, job_id=job.id, worker=WORKER, result={
        "model_id": str(model.id), "model": model.name, "steps": 30, "metrics": model.metrics, "resumed_from_step": None})


def _detail(job) -> str:
    return reverse("dashboard:finetune", kwargs={"job_id": job.id})


def _cancel(job) -> str:
    return reverse("dashboard:finetune-cancel", kwargs={"job_id": job.id})


def _model_url(model) -> str:
    return reverse("dashboard:model", kwargs={"model_id": model.id})


# --- Access ---------------------------------------------------------------------------------------


def test_anonymous_user_is_sent_to_login(client: Client):
    some = uuid.uuid4()
    for url in (reverse("dashboard:finetunes"), reverse("dashboard:finetune", kwargs={"job_id": some}),
                reverse("dashboard:models"), reverse("dashboard:model", kwargs={"model_id": some})):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("dashboard:login")), url


@pytest.mark.parametrize("role", ["owner", "admin", "engineer"])
def test_training_writers_see_every_page_with_the_start_form_and_cancel_button(ada, catalog, ada_version, tmp_path, role):
    queued = _finetune(ada, ada_version)
    done = _finetune(ada, ada_version)
    _run(done)
    model = _register(ada, done, ada_version, tmp_path)
    _succeed(done, model)
    client = client_for(ada.user) if role == "owner" else _member(ada, role)

    listing = _html(client.get(reverse("dashboard:finetunes")))
    queued_page = _html(client.get(_detail(queued)))
    registry = _html(client.get(reverse("dashboard:models")))
    card = _html(client.get(_model_url(model)))

    assert '<a href="/fine-tunes/" aria-current="page">Fine-tunes</a>' in listing
    assert '<a href="/models/" aria-current="page">Models</a>' in registry and '<a href="/models/" aria-current="page">Models</a>' in card
    assert 'id="finetune-form"' in listing and f'data-job-id="{queued.id}"' in listing
    assert 'id="finetune-cancel-form"' in queued_page
    assert "support-bot" in registry and "support-bot" in card


@pytest.mark.parametrize("role", ["annotator", "reviewer", "billing"])
def test_roles_without_training_get_403_naming_training_read_and_no_nav_entry(ada, catalog, ada_version, tmp_path, role):
    job = _finetune(ada, ada_version)
    _run(job)
    model = _register(ada, job, ada_version, tmp_path)
    client = _member(ada, role)

    for url in (reverse("dashboard:finetunes"), _detail(job), reverse("dashboard:models"), _model_url(model)):
        response = client.get(url)
        assert response.status_code == 403, url
        assert 'data-testid="missing-permission">training:read<' in _html(response)
        assert "support-bot" not in _html(response)
    started = client.post(reverse("dashboard:finetunes"), {"base_model": BASE, "train_version": str(ada_version.id),
                                                           "method": "lora", "gpus": "1"})
    cancelled = client.post(_cancel(job))
    assert started.status_code == 403 and cancelled.status_code == 403
    assert [j.state for j in _jobs(ada)] == ["running"]
    home = _html(client.get(reverse("dashboard:home")))
    assert 'href="/fine-tunes/"' not in home and 'href="/models/"' not in home


def test_a_read_only_member_sees_the_pages_without_the_form_or_cancel_button_and_gets_403_on_post(
        ada, catalog, ada_version, monkeypatch):
    # No built-in role reads training without writing it; a role narrowed to training:read stands
    # in for a viewer (the dashboard takes a member's permissions from this table on each request).
    narrowed = tenants.context.ROLE_PERMISSIONS["engineer"] - {"training:write"}
    monkeypatch.setitem(tenants.context.ROLE_PERMISSIONS, "engineer", narrowed)
    job = _finetune(ada, ada_version)
    viewer = _member(ada, "engineer")

    listing = viewer.get(reverse("dashboard:finetunes"))
    detail = viewer.get(_detail(job))
    started = viewer.post(reverse("dashboard:finetunes"), {"base_model": BASE, "train_version": str(ada_version.id),
                                                           "method": "lora", "gpus": "1"})
    cancelled = viewer.post(_cancel(job))

    assert listing.status_code == 200 and detail.status_code == 200
    assert f'data-job-id="{job.id}"' in _html(listing) and 'id="finetune-form"' not in _html(listing)
    assert 'id="finetune-cancel-form"' not in _html(detail) and "Queued" in _html(detail)
    assert started.status_code == 403 and 'data-testid="missing-permission">training:write<' in _html(started)
    assert cancelled.status_code == 403
    assert [j.state for j in _jobs(ada)] == ["queued"]


def test_another_tenants_fine_tune_and_model_are_404_and_cannot_be_cancelled(ada, ada_client, grace, catalog, tmp_path):
    grace_version = _version(grace, name="theirs", count=12)
    theirs = _finetune(grace, grace_version)
    model = _register(grace, theirs, grace_version, tmp_path, name="their-bot")

    for url in (_detail(theirs), _detail(theirs) + "?fragment=finetune-live", _model_url(model),
                reverse("dashboard:finetune", kwargs={"job_id": uuid.uuid4()}),
                reverse("dashboard:model", kwargs={"model_id": uuid.uuid4()})):
        assert ada_client.get(url).status_code == 404, url
    assert ada_client.post(_cancel(theirs)).status_code == 404
    assert [j.state for j in _jobs(grace)] == ["queued"]
    listing = _html(ada_client.get(reverse("dashboard:finetunes")))
    registry = _html(ada_client.get(reverse("dashboard:models")))
    assert str(theirs.id) not in listing and "their-bot" not in registry
    # Their version is not a choice on the start form, so it cannot be trained on either.
    assert str(grace_version.id) not in listing


def test_a_job_of_another_kind_is_not_a_fine_tune(ada, ada_client):
    from lode.core.jobs.services import job_create

    ping = job_create(tenant_id=ada.organization.id, created_by=ada.user, kind="core.ping", params={})
    assert ada_client.get(_detail(ping)).status_code == 404
    assert ada_client.post(_cancel(ping)).status_code == 404


def test_the_detail_and_model_pages_take_no_post(ada, ada_client, catalog, ada_version, tmp_path):
    job = _finetune(ada, ada_version)
    model = _register(ada, job, ada_version, tmp_path)
    for url in (_detail(job), reverse("dashboard:models"), _model_url(model)):
        assert ada_client.post(url, {}).status_code == 405, url


# --- The list and the start form ---------------------------------------------------------------------


def test_the_list_shows_each_fine_tunes_model_base_task_method_state_and_progress(ada, ada_client, catalog, ada_version,
                                                                                  tmp_path):
    queued = _finetune(ada, ada_version, method="full")
    running = _finetune(ada, ada_version)
    _run(running)
    done = _finetune(ada, ada_version, suffix="v2")
    _run(done)
    model = _register(ada, done, ada_version, tmp_path, name="support-bot-v2")
    _succeed(done, model)

    html = _html(ada_client.get(reverse("dashboard:finetunes")))

    def row(job) -> str:
        return re.search(r'<tr data-job-id="%s">(.*?)</tr>' % job.id, html, re.S).group(1)

    assert "Queued" in row(queued) and "<td>full</td>" in row(queued) and "<code>tiny-gpt2</code>" in row(queued)
    assert "Running" in row(running) and "50%" in row(running) and "step 30 of 60, loss 1.5" in row(running)
    assert "<td>sft</td>" in row(running) and "<td>lora</td>" in row(running)
    assert "Succeeded" in row(done) and f'href="{_model_url(model)}">support-bot-v2</a>' in row(done)
    # Newest first; the table polls while any fine-tune is unfinished.
    assert html.index(str(done.id)) < html.index(str(running.id)) < html.index(str(queued.id))
    assert 'data-polling="true"' in html and 'hx-get="/fine-tunes/?fragment=finetunes-table"' in html


def test_the_list_fragment_stops_polling_once_every_fine_tune_is_finished(ada, ada_client, catalog, ada_version):
    job = _finetune(ada, ada_version)
    url = reverse("dashboard:finetunes")
    assert 'data-polling="true"' in _html(ada_client.get(url, {"fragment": "finetunes-table"}))

    training_services.finetune_cancel(tenant_id=ada.organization.id, job_id=job.id, by=ada.user)
    fragment = _html(ada_client.get(url, {"fragment": "finetunes-table"}))

    assert 'data-polling="false"' in fragment and "every 2s" not in fragment and "Cancelled" in fragment
    assert "<html" not in fragment and 'id="finetune-form"' not in fragment


def test_the_list_takes_the_same_queries_for_one_fine_tune_or_many(ada, ada_client, catalog, ada_version):
    _finetune(ada, ada_version)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert ada_client.get(reverse("dashboard:finetunes")).status_code == 200
        return len(captured)

    one = queries()
    for _ in range(3):
        _finetune(ada, ada_version)
    assert queries() == one


def test_the_start_form_offers_the_catalog_and_only_ready_versions(ada, ada_client, catalog, ada_version):
    from lode.datasets import services as dataset_services
    from django.core.files.uploadedfile import SimpleUploadedFile

    dataset = dataset_services.dataset_create(tenant_id=ada.organization.id, name="building", modality="instruction",
                                              by=ada.user)
    _, building = dataset_services.upload_direct(
        tenant_id=ada.organization.id, dataset_id=dataset.id,
        file=SimpleUploadedFile("a.jsonl", b'{"prompt": "q", "response": "a"}\n'), by=ada.user)

    response = ada_client.get(reverse("dashboard:finetunes"))
    form = response.context["create_form"]
    html = _html(response)

    assert [value for value, _ in form.fields["base_model"].choices] == [BASE]
    assert [value for value, _ in form.fields["train_version"].choices] == [str(ada_version.id)]
    assert [value for value, _ in form.fields["validation_version"].choices] == ["", str(ada_version.id)]
    assert "support v1 (instruction, 24 rows)" in html and str(building.id) not in html
    assert [value for value, _ in form.fields["task"].choices] == ["", "sft", "classification", "dpo", "text_to_image"]
    assert 'id="hyperparameter-table"' in html and "<code>lora_rank</code>" in html


def test_the_start_form_queues_the_fine_tune_and_shows_its_estimate(ada, ada_client, catalog, ada_version):
    response = ada_client.post(reverse("dashboard:finetunes"), {
        "base_model": BASE, "train_version": str(ada_version.id), "validation_version": "", "task": "",
        "method": "lora", "hyperparameters": '{"epochs": 2, "learning_rate": 0.001}', "suffix": "first", "gpus": "1",
    })

    [job] = _jobs(ada)
    assert response.status_code == 302 and response["Location"] == _detail(job)
    assert job.params["task"] == "sft" and job.params["suffix"] == "first"
    assert job.params["hyperparameters"]["epochs"] == 2 and job.params["hyperparameters"]["learning_rate"] == 0.001
    assert rows(AuditEvent, ada.organization.id, action="training.finetune_created")
    estimate = job.params["estimate"]
    page = ada_client.get(response["Location"])
    [message] = _messages(page)
    assert message.startswith("Fine-tune of tiny-gpt2 (sft, lora) queued. Estimated ")
    assert f"{estimate['gpu_seconds']:g} GPU-seconds" in message
    html = _html(page)
    facts = re.search(r'<dl class="facts" id="finetune-estimate">(.*?)</dl>', html, re.S).group(1)
    assert f"about {estimate['seconds']} s" in facts and estimate["gpu_class"] in facts and str(estimate["tokens"]) in facts
    assert '<a href="/dataset-versions/%s/">support v1</a>' % ada_version.id in html
    assert "<code>learning_rate</code>" in html and 'id="finetune-cancel-form"' in html


@pytest.mark.parametrize("overrides, field, message", [
    ({"hyperparameters": "{not json"}, "hyperparameters", "Not valid JSON"),
    ({"hyperparameters": "[1, 2]"}, "hyperparameters", "A JSON object"),
    ({"hyperparameters": '{"epochs": 0}'}, "hyperparameters", "hyperparameters.epochs: at least 1"),
    ({"hyperparameters": '{"warp_speed": 9}'}, "hyperparameters", "hyperparameters.warp_speed: unknown"),
    ({"hyperparameters": '{"lora_rank": 4}', "method": "full"}, "hyperparameters", "applies to lora fine-tunes, not full"),
    ({"task": "classification"}, "base_model", "classification fine-tunes need a sequence_classification model"),
    ({"task": "dpo"}, "train_version", "dpo fine-tunes train on preference data"),
    ({"suffix": "Not OK"}, "suffix", "up to 40 lowercase letters, digits and hyphens"),
    ({"gpus": "0"}, "gpus", "greater than or equal to 1"),
    ({"method": "qlora"}, "method", "Select a valid choice"),
    ({"base_model": "gpt-99"}, "base_model", "Select a valid choice"),
    ({"train_version": str(uuid.uuid4())}, "train_version", "Select a valid choice"),
])
def test_a_bad_start_form_shows_the_error_on_its_field_and_writes_nothing(ada, ada_client, catalog, ada_version,
                                                                          overrides, field, message):
    audit_before = len(rows(AuditEvent, ada.organization.id, tenant_id__exact=ada.organization.id))
    form = {"base_model": BASE, "train_version": str(ada_version.id), "validation_version": "", "task": "",
            "method": "lora", "hyperparameters": "", "suffix": "", "gpus": "1", **overrides}

    response = ada_client.post(reverse("dashboard:finetunes"), form)

    assert response.status_code == 400
    errors = response.context["create_form"].errors
    assert list(errors) == [field] and message in errors[field][0], errors
    assert 'class="field-error"' in _html(response) and html_lib.escape(message, quote=False) in _html(response)
    assert _jobs(ada) == []
    assert len(rows(AuditEvent, ada.organization.id, tenant_id__exact=ada.organization.id)) == audit_before


def test_a_refused_quota_shows_on_the_form_and_writes_nothing(ada, ada_client, catalog, ada_version, monkeypatch):
    from lode.billing.services import QuotaExceeded

    def refuse(**kwargs):
        raise QuotaExceeded("The estimate of 900 GPU-seconds exceeds the gpu_seconds quota.")

    monkeypatch.setattr("lode.billing.jobs.services.usage_admit", refuse)
    response = ada_client.post(reverse("dashboard:finetunes"), {
        "base_model": BASE, "train_version": str(ada_version.id), "method": "lora", "gpus": "1"})

    assert response.status_code == 402
    assert response.context["create_form"].non_field_errors() == ["The estimate of 900 GPU-seconds exceeds the gpu_seconds quota."]
    assert _jobs(ada) == []


# --- A fine-tune ---------------------------------------------------------------------------------------


def test_the_detail_page_shows_progress_curves_checkpoints_and_events_while_running(ada, ada_client, catalog, ada_version):
    job = _finetune(ada, ada_version)
    _run(job)

    response = ada_client.get(_detail(job))
    html = _html(response)

    assert response.status_code == 200
    assert 'data-polling="true"' in html and f'hx-get="{_detail(job)}?fragment=finetune-live"' in html
    assert "Running" in html and "50%" in html and "step 30 of 60, loss 1.5" in html
    assert 'data-testid="finetune-eta"' in html
    assert _json_script(html, "loss-points") == [{"x": 10, "y": 2.5}, {"x": 20, "y": 2.0}, {"x": 30, "y": 1.5}]
    assert 'data-loss-chart="loss-points"' in html and 'data-step-chart="eval-chart"' in html
    chart = _json_script(html, "eval-chart")
    assert [(series["label"], series["axis"]) for series in chart["series"]] == [("val_loss", "y"), ("perplexity", "y1")]
    assert chart["series"][0]["data"] == [{"x": 10, "y": 2.8}, {"x": 20, "y": 2.4}, {"x": 30, "y": 2.0}]
    steps = re.findall(r'<tr data-step="(\d+)">', html)
    assert steps == ["30", "20", "10"]  # newest checkpoint first
    checkpoint = re.search(r'<tr data-step="30">(.*?)</tr>', html, re.S).group(1)
    assert "6.0\xa0KB" in checkpoint and "every_steps" in checkpoint
    assert "Step 30" in html and "1234 tokens/s" in html
    assert "eval at step 30" in html and "step 30 of 60, loss 1.5" in html  # events log
    assert 'id="finetune-cancel-form"' in html and 'action="%s"' % _cancel(job) in html


def test_the_live_fragment_picks_up_new_metrics_and_stops_polling_when_the_job_ends(ada, ada_client, catalog,
                                                                                   ada_version, tmp_path):
    job = _finetune(ada, ada_version)
    _run(job, steps=1, evals=False)
    url = _detail(job)

    fragment = _html(ada_client.get(url, {"fragment": "finetune-live"}))
    assert "<html" not in fragment and 'id="finetune-setup"' not in fragment
    assert len(_json_script(fragment, "loss-points")) == 1 and "No evaluation yet." in fragment

    job_event_add(job=job, kind="metric", message="step 20", data={"kind": "train", "step": 20, "loss": 1.0})
    job_event_add(job=job, kind="metric", message="generation eval", data={"kind": "eval", "bleu": 17.5, "chrf": 40.25})
    fragment = _html(ada_client.get(url, {"fragment": "finetune-live"}))
    assert [point["x"] for point in _json_script(fragment, "loss-points")] == [10, 20]
    # An evaluation without a step (the generation eval) is a latest figure, not a point on a curve.
    assert 'id="eval-chart"' not in fragment
    latest = re.search(r'<table class="table compact-table" id="latest-eval">(.*?)</table>', fragment, re.S).group(1)
    assert "<code>bleu</code>" in latest and "17.5000" in latest and "40.2500" in latest

    model = _register(ada, job, ada_version, tmp_path)
    _succeed(job, model)
    fragment = _html(ada_client.get(url, {"fragment": "finetune-live"}))
    assert 'data-polling="false"' in fragment and "every 2s" not in fragment and "Succeeded" in fragment
    assert f'<a href="{_model_url(model)}" data-testid="finetune-model-link">support-bot</a>' in fragment
    assert 'id="finetune-cancel-form"' not in fragment


def test_a_failed_fine_tune_shows_its_error(ada, ada_client, catalog, ada_version):
    from lode.core.jobs.services import job_fail

    job = _finetune(ada, ada_version)
    _run(job, steps=1)
    job_fail(tenant_id=job.tenant_id, job_id=job.id, worker=WORKER, error="CUDA out of memory <at step 10>", code="oom")

    html = _html(ada_client.get(_detail(job)))

    assert "Failed" in html and "CUDA out of memory &lt;at step 10&gt;" in html
    assert 'data-polling="false"' in html and 'id="finetune-cancel-form"' not in html


def test_cancelling_a_queued_fine_tune_cancels_it(ada, ada_client, catalog, ada_version):
    job = _finetune(ada, ada_version)

    response = ada_client.post(_cancel(job))

    assert response.status_code == 302 and response["Location"] == _detail(job)
    assert [j.state for j in _jobs(ada)] == ["cancelled"]
    assert rows(AuditEvent, ada.organization.id, action="training.finetune_cancelled")
    page = ada_client.get(response["Location"])
    assert _messages(page) == ["Fine-tune cancelled."]
    assert "Cancelled" in _html(page) and 'id="finetune-cancel-form"' not in _html(page)


def test_cancelling_a_running_fine_tune_asks_its_worker_to_stop(ada, ada_client, catalog, ada_version):
    job = _finetune(ada, ada_version)
    _run(job, steps=1)

    page = ada_client.get(ada_client.post(_cancel(job))["Location"])

    [stored] = _jobs(ada)
    assert stored.state == "running" and stored.cancel_requested_at is not None
    assert _messages(page) == ["Cancellation requested: the worker stops the fine-tune at its next check."]
    html = _html(page)
    assert "cancel requested" in html and re.search(r'<button type="submit" class="button button-danger" disabled>', html)


def test_cancelling_a_finished_fine_tune_says_why_not(ada, ada_client, catalog, ada_version):
    job = _finetune(ada, ada_version)
    training_services.finetune_cancel(tenant_id=ada.organization.id, job_id=job.id, by=ada.user)

    page = ada_client.get(ada_client.post(_cancel(job))["Location"])

    assert _messages(page) == ["The job already cancelled."]
    assert [j.state for j in _jobs(ada)] == ["cancelled"]


# --- The registry and a model's page -----------------------------------------------------------------


def test_the_registry_lists_base_models_and_the_tenants_models_with_key_metrics(ada, ada_client, catalog, ada_version,
                                                                               tmp_path):
    job = _finetune(ada, ada_version)
    model = _register(ada, job, ada_version, tmp_path)
    other_job = _finetune(ada, ada_version, method="full")
    full = _register(ada, other_job, ada_version, tmp_path, name="support-full", method="full", is_adapter=False,
                     trainable_parameter_count=120_000, metrics={"accuracy": 0.875, "f1_macro": 0.5})

    html = _html(ada_client.get(reverse("dashboard:models")))

    base = re.search(r'<tr data-base-model="tiny-gpt2">(.*?)</tr>', html, re.S).group(1)
    assert catalog.architecture in base and str(catalog.parameter_count) in base
    row = re.search(r'<tr data-model-id="%s">(.*?)</tr>' % model.id, html, re.S).group(1)
    assert f'href="{_model_url(model)}">support-bot</a>' in row and "<code>tiny-gpt2</code>" in row
    assert "LoRA adapter" in row and ">adapter<" in row and ">120000<" in row and ">4096<" in row
    assert "<code>val_loss</code> 1.2345" in row and "<code>bleu</code> 12.5000" in row and "steps" not in row
    other = re.search(r'<tr data-model-id="%s">(.*?)</tr>' % full.id, html, re.S).group(1)
    assert "Full fine-tune" in other and ">adapter<" not in other and "<code>accuracy</code> 0.8750" in other
    assert html.index("support-full") < html.index("support-bot")  # newest first


def test_the_registry_takes_the_same_queries_for_one_model_or_many(ada, ada_client, catalog, ada_version, tmp_path):
    _register(ada, _finetune(ada, ada_version), ada_version, tmp_path, name="m-0")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert ada_client.get(reverse("dashboard:models")).status_code == 200
        return len(captured)

    one = queries()
    for index in range(1, 4):
        _register(ada, _finetune(ada, ada_version), ada_version, tmp_path, name=f"m-{index}")
    assert queries() == one


def test_the_model_page_shows_the_card_escaped_with_lineage_hyperparameters_and_metrics(ada, ada_client, catalog,
                                                                                      ada_version, tmp_path):
    validation = _version(ada, name="held-out", count=6, seed=1)
    job = _finetune(ada, ada_version, validation_version_id=validation.id)
    card = "# support-bot\n\nA LoRA adapter <script>alert('card')</script> for **sft**.\n| metric | value |"
    model = _register(ada, job, ada_version, tmp_path, card=card, validation_version_id=validation.id,
                      labels=[])

    html = _html(ada_client.get(_model_url(model)))

    assert "<script>alert('card')</script>" not in html
    assert "&lt;script&gt;alert(&#x27;card&#x27;)&lt;/script&gt;" in html
    assert '<pre class="model-card" data-testid="model-card"># support-bot' in html
    assert f'<a href="/dataset-versions/{ada_version.id}/">support v1</a>' in html
    assert f'<a href="/dataset-versions/{validation.id}/">held-out v1</a>' in html
    assert f'<a href="{_detail(job)}" data-testid="model-job-link">' in html
    hyperparameters = re.search(r'<table class="table compact-table" id="hyperparameters">(.*?)</table>', html, re.S).group(1)
    assert "<code>learning_rate</code>" in hyperparameters and "0.0002" in hyperparameters
    assert "[&quot;c_attn&quot;]" in hyperparameters
    metrics = re.search(r'<table class="table compact-table" id="metric-table">(.*?)</table>', html, re.S).group(1)
    assert "<code>perplexity</code>" in metrics and "3.4367" in metrics


def test_the_fine_tune_page_links_to_the_model_it_made(ada, ada_client, catalog, ada_version, tmp_path):
    job = _finetune(ada, ada_version)
    _run(job, steps=1)
    model = _register(ada, job, ada_version, tmp_path)
    _succeed(job, model)

    html = _html(ada_client.get(_detail(job)))

    assert f'<a href="{_model_url(model)}" data-testid="finetune-model-link">support-bot</a>' in html


# --- Shaping the curves --------------------------------------------------------------------------------


class _Event:
    def __init__(self, kind: str, data):
        self.kind, self.data = kind, data


def test_metric_series_separates_train_and_eval_figures_and_skips_what_is_not_a_number():
    events = [
        _Event("state", {"state": "running"}),
        _Event("metric", {"kind": "train", "step": 1, "loss": 2.0, "grad_norm": None}),
        _Event("metric", {"kind": "train", "step": 2, "loss": None}),
        _Event("metric", {"kind": "train", "step": True, "loss": 1.0}),
        _Event("metric", "not a mapping"),
        _Event("log", {"kind": "train", "step": 9, "loss": 9.0}),
        _Event("metric", {"kind": "eval", "step": 2, "epoch": 1, "val_loss": 1.5, "accuracy": 0.75, "f1_macro": 0.5,
                          "majority_baseline_accuracy": 0.5, "note": "text"}),
        _Event("metric", {"kind": "eval", "step": 4, "val_loss": 1.25, "reward_margin": 0.2}),
    ]

    series = metric_series(events)

    assert series["train_points"] == [{"x": 1, "y": 2.0}]
    assert [(s["label"], s["axis"], len(s["data"])) for s in series["eval_chart"]["series"]] == [
        ("val_loss", "y", 2), ("accuracy", "y1", 1), ("f1_macro", "y1", 1), ("majority_baseline_accuracy", "y1", 1),
        ("reward_margin", "y1", 1)]
    assert {row["name"]: row["value"] for row in series["latest_eval"]}["val_loss"] == 1.25
    assert series["latest_train"]["step"] is True  # the latest train event, whatever it says
    assert metric_series([])["eval_chart"] is None


def test_the_hyperparameter_reference_names_every_key_with_its_default():
    table = {row["name"]: row for row in hyperparameter_help()}
    assert table["epochs"]["default"] == 3 and table["epochs"]["allowed"] == "1 – 100"
    assert table["learning_rate"]["default"] == "per method"
    assert table["lora_rank"]["applies"] == "lora" and table["lora_rank"]["default"] == 8
    assert table["max_steps"]["default"] == "null" and table["packing"]["default"] == "true" and table["lr_scheduler"]["allowed"] == "linear, cosine, constant"
