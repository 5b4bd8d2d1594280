"""Fine-tune jobs end to end: the API, a real Celery worker process training tiny offline models on
dataset versions made by the real ingest, checkpoints in S3, the registry, resume after SIGKILL,
cancel, several processes over gloo, metering, and the 4xx answers to bad requests."""
from __future__ import annotations

import io
import math
import os
import random
import signal
import time
import zipfile

import pytest
import torch

from lode.core.models import Job, JobEvent, JobState
from tests.conftest import system, wait_for
from tests.training.conftest import TRAINING_WORDS, instruction_rows, version_built, version_from_rows

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])


def _job(job_id) -> Job:
    return system(Job).get(id=job_id)


def _wait_state(job_id, *states, timeout: float = 240) -> Job:
    return wait_for(lambda: (job := _job(job_id)).state in states and job, timeout=timeout, interval=0.2,
                    message=f"the fine-tune to reach {states}")


def _evals(job_id) -> list[dict]:
    return [event.data for event in system(JobEvent).filter(job_id=job_id, kind="metric").order_by("id")
            if event.data.get("kind") == "eval" and "val_loss" in event.data]


def _create(client, **body):
    return client.post("/api/v1/fine-tunes", body, format="json")


def _succeeded(job_id, timeout: float = 240) -> Job:
    job = _wait_state(job_id, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, timeout=timeout)
    assert job.state == JobState.SUCCEEDED, (job.error, job.error_code)
    return job


# --- Tasks on a real worker ---------------------------------------------------------------------


def test_sft_lora_lowers_validation_loss_and_the_registered_model_generates(
        celery_worker, make_tenant, base_models, api_client_for):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lode.billing.models import UsageEvent
    from lode.training.selectors import tuned_model_get
    from workers.model_store import materialize_base_model, materialize_folder

    base_models("tiny-gpt2")
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    version = version_from_rows(tenant, instruction_rows(160, seed=4), modality="instruction")

    created = _create(client, base_model="tiny-gpt2", train_version=str(version.id), suffix="support",
                      hyperparameters={"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "eval_every_steps": 10,
                                       "checkpoint_every_steps": 20, "log_every_steps": 5})
    assert created.status_code == 202, created.content
    body = created.json()
    assert (body["task"], body["method"], body["state"]) == ("sft", "lora", "queued")
    assert float(body["estimate"]["usage"][0]["quantity"]) > 0 and body["params"]["estimate"]["tokens"] > 0

    job = _succeeded(body["id"])
    evals = _evals(job.id)
    assert evals[0]["step"] == 0
    assert evals[-1]["val_loss"] < 0.8 * evals[0]["val_loss"], [e["val_loss"] for e in evals]
    assert job.result["metrics"]["perplexity"] < evals[0]["perplexity"]
    assert {"bleu", "chrf"} <= set(job.result["metrics"])

    model = client.get(f"/api/v1/models/{job.result['model_id']}").json()
    assert (model["is_adapter"], model["task"], model["base_model"], model["train_version"]) == (
        True, "sft", "tiny-gpt2", str(version.id))
    assert model["name"].startswith("ft-tiny-gpt2-support-")
    card = client.get(f"/api/v1/models/{model['id']}/card")
    assert card.status_code == 200 and card["Content-Type"].startswith("text/markdown")
    assert str(version.id) in card.content.decode() and "## Evaluation" in card.content.decode()
    checkpoints = client.get(f"/api/v1/fine-tunes/{job.id}/checkpoints").json()["results"]
    assert [c["step"] for c in checkpoints] == [20, 40]

    # The adapter, fetched from S3 by a worker's model store, loads onto its base and generates.
    stored = tuned_model_get(tenant_id=tenant.organization.id, model_id=model["id"])
    folder = materialize_folder(tenant_id=tenant.organization.id, prefix=stored.artifact_prefix,
                                cache_subdir=f"tuned/{stored.id}", manifest=stored.manifest)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(materialize_base_model("tiny-gpt2")), folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Question about my refund number 7?"}],
                                           tokenize=False, add_generation_prompt=True)
    encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    output = tuned.generate(**encoded, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert output.shape[1] > encoded["input_ids"].shape[1]

    # Compute was metered through billing's one call, each report once.
    usage = [event for event in system(UsageEvent).filter(tenant_id=tenant.organization.id, meter="gpu_seconds")
             if event.idempotency_key.startswith(f"job:{job.id}:compute:")]
    assert usage and len({event.idempotency_key for event in usage}) == len(usage)
    assert sum(event.quantity for event in usage) > 0


def _classification_rows(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = {"billing": ["refund", "invoice", "charge", "price"], "bug": ["crash", "error", "freeze", "broken"],
             "account": ["password", "login", "email", "username"]}
    rows = []
    for _ in range(count):
        label = rng.choices(["billing", "bug", "account"], weights=[5, 3, 2])[0]
        rows.append({"text": f"My {rng.choice(words[label])} {rng.choice(words[label])} problem today",
                     "labels": [label]})
    return rows


def test_classification_fine_tune_beats_the_majority_class(celery_worker, make_tenant, base_models, api_client_for):
    base_models("tiny-gpt2-classifier")
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    version = version_from_rows(tenant, _classification_rows(200), modality="classification")

    created = _create(client, base_model="tiny-gpt2-classifier", train_version=str(version.id), method="full",
                      hyperparameters={"epochs": 4, "batch_size": 8, "learning_rate": 2e-3, "validation_fraction": 0.2,
                                       "eval_every_steps": 20})
    assert created.status_code == 202, created.content
    job = _succeeded(created.json()["id"])

    metrics = job.result["metrics"]
    assert metrics["accuracy"] >= metrics["majority_baseline_accuracy"] + 0.2, metrics
    model = client.get(f"/api/v1/models/{job.result['model_id']}").json()
    assert model["labels"] == ["account", "billing", "bug"] and model["is_adapter"] is False


def test_dpo_raises_the_margin_of_chosen_over_rejected(celery_worker, make_tenant, base_models, api_client_for):
    base_models("tiny-gpt2")
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    rng = random.Random(5)
    rows = []
    for _ in range(120):
        word = rng.choice(TRAINING_WORDS)
        rows.append({"prompt": f"Can you help with my {word}?",
                     "chosen": f"Of course. Your {word} is sorted, thank you for waiting.",
                     "rejected": "no. go away"})
    version = version_from_rows(tenant, rows, modality="preference")

    created = _create(client, base_model="tiny-gpt2", train_version=str(version.id),
                      hyperparameters={"epochs": 2, "batch_size": 8, "learning_rate": 5e-3, "dpo_beta": 0.1,
                                       "eval_every_steps": 10})
    assert created.status_code == 202, created.content
    assert created.json()["task"] == "dpo"  # preference data on a causal LM
    job = _succeeded(created.json()["id"])

    evals = _evals(job.id)
    assert evals[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)  # the policy starts as the reference
    assert evals[-1]["reward_margin"] > 1.0 and evals[-1]["reward_accuracy"] >= 0.9, evals[-1]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]


def _png(seed: int) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    image = Image.new("RGB", (48, 40), tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_text_to_image_lora_runs_two_steps_and_its_adapter_loads_into_the_pipeline(
        celery_worker, make_tenant, base_models, api_client_for):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from diffusers import StableDiffusionPipeline

    from lode.datasets import services as dataset_services
    from lode.training.selectors import tuned_model_get
    from workers.model_store import materialize_base_model, materialize_folder

    base_models("tiny-sd")
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        manifest = "image,caption\n"
        for number in range(6):
            bundle.writestr(f"images/{number}.png", _png(number))
            manifest += f"images/{number}.png,a flat colour swatch number {number}\n"
        bundle.writestr("manifest.csv", manifest)
    dataset = dataset_services.dataset_create(tenant_id=tenant.organization.id, name="swatches", modality="image_caption",
                                              by=tenant.user)
    _upload, version = dataset_services.upload_direct(tenant_id=tenant.organization.id, dataset_id=dataset.id,
                                                      file=SimpleUploadedFile("swatches.zip", archive.getvalue()),
                                                      by=tenant.user)
    version = version_built(tenant.organization.id, version)

    created = _create(client, base_model="tiny-sd", train_version=str(version.id),
                      hyperparameters={"max_steps": 2, "batch_size": 2, "learning_rate": 1e-2, "image_size": 64})
    assert created.status_code == 202, created.content
    assert created.json()["task"] == "text_to_image"
    job = _succeeded(created.json()["id"])
    assert job.result["steps"] == 2

    stored = tuned_model_get(tenant_id=tenant.organization.id, model_id=job.result["model_id"])
    assert stored.is_adapter and any(entry["path"].endswith(".safetensors") for entry in stored.manifest["files"])
    folder = materialize_folder(tenant_id=tenant.organization.id, prefix=stored.artifact_prefix,
                                cache_subdir=f"tuned/{stored.id}", manifest=stored.manifest)
    pipeline = StableDiffusionPipeline.from_pretrained(materialize_base_model("tiny-sd"), safety_checker=None,
                                                       requires_safety_checker=False)

    def draw():
        return pipeline("a swatch", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                        output_type="np").images[0]

    before = draw()
    pipeline.load_lora_weights(folder)
    after = draw()
    assert after.shape == (64, 64, 3)
    assert abs(after - before).max() > 0  # the adapter changes what the UNet predicts


# --- Resume, cancel, several processes ------------------------------------------------------------


def test_worker_killed_mid_fine_tune_resumes_from_its_last_checkpoint_and_finishes(
        celery_worker, make_tenant, base_models, api_client_for):
    from lode.billing.models import UsageEvent
    from lode.core.jobs.reconciler import jobs_reconcile
    from tests.conftest import WorkerProcess

    base_models("tiny-gpt2")
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    version = version_from_rows(tenant, instruction_rows(240, seed=6), modality="instruction")
    celery_worker.control("cancel_consumer", queue="gpu")
    doomed = WorkerProcess(queues="gpu", name="doomed-gpu", concurrency=1)
    try:
        created = _create(client, base_model="tiny-gpt2", train_version=str(version.id),
                          hyperparameters={"epochs": 3, "batch_size": 2, "checkpoint_every_steps": 10,
                                           "eval_every_steps": 1000, "generation_eval_samples": 0})
        assert created.status_code == 202, created.content
        job_id = created.json()["id"]
        wait_for(lambda: _job(job_id).checkpoint.get("step", 0) >= 20, timeout=180, interval=0.05,
                 message="the doomed worker to store two checkpoints")
        os.killpg(doomed.process.pid, signal.SIGKILL)  # the whole worker, as when a node disappears
        doomed.process.wait(timeout=10)
        reached = _job(job_id).checkpoint["step"]
    finally:
        doomed.stop()
        celery_worker.control("add_consumer", queue="gpu")
    assert _job(job_id).state == JobState.RUNNING
    time.sleep(2.5)

    assert jobs_reconcile(heartbeat_timeout_seconds=2).requeued == [job_id]
    job = _succeeded(job_id)

    expected_steps = 3 * math.ceil(216 / 2)  # 240 rows, 10% held out, batches of 2
    assert job.attempts == 2 and job.result["steps"] == expected_steps
    assert job.result["resumed_from_step"] == reached
    # The second attempt trained only the steps after the checkpoint.
    events = list(system(JobEvent).filter(job_id=job_id).order_by("id"))
    second_start = [index for index, event in enumerate(events) if event.kind == "state" and event.message == "running"][1]
    later_steps = [event.data["step"] for event in events[second_start:] if event.data.get("kind") == "train"]
    assert later_steps and min(later_steps) > reached
    usage = [event.idempotency_key for event in system(UsageEvent).filter(tenant_id=tenant.organization.id)
             if event.idempotency_key.startswith(f"job:{job_id}:compute:")]
    assert len(usage) == len(set(usage)) >= 2


def test_cancel_stops_a_running_fine_tune_within_seconds_and_keeps_its_checkpoint(
        celery_worker, make_tenant, base_models, api_client_for):
    from lode.core import artifacts
    from lode.training.models import TrainingCheckpoint

    base_models("tiny-gpt2")
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    version = version_from_rows(tenant, instruction_rows(200, seed=8), modality="instruction")
    created = _create(client, base_model="tiny-gpt2", train_version=str(version.id),
                      hyperparameters={"epochs": 20, "batch_size": 2, "checkpoint_every_steps": 5,
                                       "eval_every_steps": 1000})
    job_id = created.json()["id"]
    wait_for(lambda: _job(job_id).checkpoint.get("step", 0) >= 5, timeout=120, interval=0.05,
             message="a first checkpoint")

    asked = time.monotonic()
    answer = client.post(f"/api/v1/fine-tunes/{job_id}/cancel")
    assert answer.status_code == 202
    job = _wait_state(job_id, JobState.CANCELLED, JobState.SUCCEEDED, JobState.FAILED, timeout=30)

    assert job.state == JobState.CANCELLED and time.monotonic() - asked < 10
    checkpoints = list(system(TrainingCheckpoint).filter(job_id=job_id))
    assert checkpoints and all(artifacts.object_exists(tenant_id=tenant.organization.id, key=c.key) for c in checkpoints)
    assert job.checkpoint["key"] in {c.key for c in checkpoints}
    assert client.post(f"/api/v1/fine-tunes/{job_id}/cancel").status_code == 409  # already cancelled


def test_fine_tune_on_two_processes_runs_through_the_launcher_over_gloo(
        celery_worker, make_tenant, base_models, api_client_for):
    base_models("tiny-gpt2")
    tenant = make_tenant()
    client = api_client_for(tenant.user)
    version = version_from_rows(tenant, instruction_rows(100, seed=9), modality="instruction")

    created = _create(client, base_model="tiny-gpt2", train_version=str(version.id), gpus=2,
                      hyperparameters={"epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "eval_every_steps": 5,
                                       "generation_eval_samples": 0})
    assert created.status_code == 202, created.content
    job = _succeeded(created.json()["id"])

    assert job.result["world_size"] == 2 and job.result["ranks_in_sync"] is True
    batches = math.ceil(90 / 4)  # 100 rows, 10% held out, batches of 4
    assert job.result["steps"] == 2 * math.ceil(batches / 2)  # two batches a step: one on each process
    evals = _evals(job.id)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]


# --- Requests refused -----------------------------------------------------------------------------


def test_bad_fine_tune_requests_get_4xx_naming_the_field_and_write_nothing(make_tenant, base_models, api_client_for):
    from lode.billing.services import quota_set

    base_models("tiny-gpt2", "tiny-gpt2-classifier", "tiny-sd")
    tenant = make_tenant()
    other = make_tenant()
    client = api_client_for(tenant.user)
    instruction = version_from_rows(tenant, instruction_rows(20), modality="instruction")
    labeled = version_from_rows(tenant, _classification_rows(20), modality="classification")
    foreign = version_from_rows(other, instruction_rows(20), modality="instruction")
    good = {"base_model": "tiny-gpt2", "train_version": str(instruction.id)}

    cases = [
        ({"base_model": "gpt-17"}, "base_model"),
        ({"base_model": "tiny-sd"}, "base_model"),
        ({"train_version": str(labeled.id)}, "base_model"),  # no task named: the model does not fit the data
        ({"train_version": str(labeled.id), "task": "sft"}, "train_version"),  # the data does not fit the task
        ({"train_version": str(foreign.id)}, "train_version"),
        ({"train_version": "not-a-uuid"}, "train_version"),
        ({"validation_version": str(labeled.id)}, "validation_version"),
        ({"task": "translation"}, "task"),
        ({"task": "classification"}, "base_model"),
        ({"method": "qlora"}, "method"),
        ({"hyperparameters": {"epochs": -1}}, "hyperparameters.epochs"),
        ({"hyperparameters": {"warmup": 0.1}}, "hyperparameters.warmup"),
        ({"hyperparameters": {"batch_size": "eight"}}, "hyperparameters.batch_size"),
        ({"hyperparameters": ["epochs", 3]}, "hyperparameters"),
        ({"gpus": 0}, "gpus"),
        ({"gpus": 99}, "gpus"),
        ({"suffix": "Not A Slug!"}, "suffix"),
    ]
    for change, field in cases:
        answer = _create(client, **{**good, **change})
        assert answer.status_code == 400, (change, answer.content)
        error = answer.json()["error"]
        assert error["details"]["field"] == field, (change, error)
        assert field.split(".")[-1] in error["message"], (change, error)
    assert _create(client, **{key: value for key, value in good.items() if key != "train_version"}).status_code == 400

    # Through the generic jobs API the checks above would be skipped: refused.
    generic = client.post("/api/v1/jobs", {"kind": "training.finetune", "params": {}}, format="json")
    assert generic.status_code == 400 and generic.json()["error"]["details"]["field"] == "kind"

    # An estimate over a hard quota is refused before the job exists.
    quota_set(tenant_id=tenant.organization.id, meter="gpu_seconds", kind="hard", limit=1)
    refused = _create(client, **good)
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "quota_exceeded"

    assert not system(Job).filter(tenant_id=tenant.organization.id, kind="training.finetune").exists()


def test_fine_tunes_and_models_of_another_tenant_are_not_found(make_tenant, base_models, api_client_for):
    base_models("tiny-gpt2")
    owner = make_tenant()
    stranger = api_client_for(make_tenant().user)
    version = version_from_rows(owner, instruction_rows(20), modality="instruction")
    created = _create(api_client_for(owner.user), base_model="tiny-gpt2", train_version=str(version.id))
    job_id = created.json()["id"]

    for path in (f"/api/v1/fine-tunes/{job_id}", f"/api/v1/fine-tunes/{job_id}/events",
                 f"/api/v1/fine-tunes/{job_id}/checkpoints"):
        assert stranger.get(path).status_code == 404, path
    assert stranger.post(f"/api/v1/fine-tunes/{job_id}/cancel").status_code == 404
    assert job_id not in str(stranger.get("/api/v1/fine-tunes").content)
    assert _job(job_id).state == JobState.QUEUED


# --- GPU --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; this machine has none")
class TestOnCuda:
    def test_sft_in_bf16_on_the_gpu_lowers_the_loss(self, base_models):
        from lode.training.hyperparameters import hyperparameters_validate
        from workers.model_store import materialize_base_model
        from workers.training import loop
        from workers.training.finetune import build_text_runner, split_rows

        base_models("tiny-gpt2")
        hp = hyperparameters_validate("sft", "lora", {"epochs": 3, "learning_rate": 1e-3, "mixed_precision": "bf16",
                                                      "eval_every_steps": 10})
        train, validation = split_rows(instruction_rows(160), fraction=0.1, seed=0)
        built = build_text_runner(task="sft", method="lora", folder=materialize_base_model("tiny-gpt2"), hp=hp,
                                  device=torch.device("cuda"), train_rows=train, validation_rows=validation)

        class Hooks:
            evals: list = []

            def metrics(self, values): ...

            def evaluation(self, values):
                self.evals.append(values)

            def checkpoint(self, step, data, summary): ...

            def progress(self, fraction, message): ...

            def check_cancelled(self): ...

        hooks = Hooks()
        result = loop.train(built.runner, hp, hooks)

        assert loop.autocast_dtype(torch.device("cuda"), "bf16") == torch.bfloat16
        assert [entry for entry in result.history if entry["kind"] == "train"][-1]["gpu_memory_bytes"] > 0
        assert hooks.evals[-1]["val_loss"] < 0.9 * hooks.evals[0]["val_loss"]
