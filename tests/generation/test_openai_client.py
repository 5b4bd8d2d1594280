"""The official `openai` client against a live Lode (its base_url pointed at /v1): a file uploaded
and ingested, a fine-tune created, followed, listed, its events and checkpoints read, the model it
made listed and chatted with (whole and streamed), an image drawn, another fine-tune cancelled; and the errors the client raises for bad requests, another
tenant's objects, bad keys and missing scopes, in OpenAI's error shape."""
from __future__ import annotations

import random
import time

import openai
import orjson
import pytest
from openai import OpenAI

from tests.conftest import api_key_for
from tests.training.conftest import TRAINING_WORDS

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])

SCOPES = ["datasets:read", "datasets:write", "training:read", "training:write"]
# Lode's own hyperparameter names pass through beside OpenAI's: a few steps, each one logged,
# evaluated and checkpointed, so a short run has events and checkpoints to show.
FAST = {"n_epochs": 1, "batch_size": 4, "log_every_steps": 1, "eval_every_steps": 3, "checkpoint_every_steps": 3,
        "generation_eval_samples": 2}


def _chat_jsonl(count: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        word = rng.choice(TRAINING_WORDS)
        lines.append({"messages": [
            {"role": "system", "content": "You are a support agent."},
            {"role": "user", "content": f"Question about my {word}?"},
            {"role": "assistant", "content": f"Your {word} is handled. Thank you for asking."},
        ]})
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def _client(live_server, user, *, scopes=SCOPES) -> OpenAI:
    return OpenAI(api_key=api_key_for(user, scopes=scopes), base_url=live_server.url + "/v1", max_retries=0, timeout=60)


def _until(fetch, done, *, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}: {value}")
        time.sleep(0.3)


def _error(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body
    return body["error"]


def test_the_openai_client_uploads_fine_tunes_and_lists_the_model(live_server, celery_worker, generation_server,
                                                                   make_tenant, base_models):
    base_models("tiny-gpt2", "tiny-sd")
    tenant = make_tenant()
    client = _client(live_server, tenant.user, scopes=SCOPES + ["generation:read", "generation:write"])
    data = _chat_jsonl(40)

    uploaded = client.files.create(file=("support.jsonl", data), purpose="fine-tune")
    assert uploaded.id.startswith("file-") and len(uploaded.id) == 37
    assert (uploaded.object, uploaded.filename, uploaded.bytes, uploaded.purpose) == ("file", "support.jsonl", len(data),
                                                                                     "fine-tune")
    assert uploaded.status in ("uploaded", "processed")

    # Created at once: the request waits for the ingest of the file it names.
    job = client.fine_tuning.jobs.create(model="tiny-gpt2", training_file=uploaded.id, hyperparameters=FAST,
                                         suffix="support")
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert (job.model, job.training_file, job.status, job.hyperparameters.n_epochs) == (
        "tiny-gpt2", uploaded.id, "queued", 1)
    assert job.method.type == "supervised" and job.fine_tuned_model is None

    done = _until(lambda: client.fine_tuning.jobs.retrieve(job.id),
                  lambda found: found.status in ("succeeded", "failed", "cancelled"), timeout=240,
                  message="the fine-tune to finish")
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith("ft-tiny-gpt2-support-")
    assert done.trained_tokens > 0 and done.finished_at >= done.created_at and done.error is None
    assert done.hyperparameters.batch_size == 4 and done.hyperparameters.learning_rate_multiplier == 1.0

    # Events newest first, paged by the client through `after`.
    events = list(client.fine_tuning.jobs.list_events(done.id, limit=5))
    assert len(events) > 5 and [event.id for event in events] == sorted(
        (event.id for event in events), key=lambda event_id: -int(event_id.removeprefix("ftevent-")))
    assert {event.object for event in events} == {"fine_tuning.job.event"}
    assert {event.type for event in events} == {"message", "metrics"}
    train = [event for event in events if event.type == "metrics" and "train_loss" in event.data]
    assert train and all(event.data["step"] >= 1 and event.level == "info" for event in train)

    checkpoints = client.fine_tuning.jobs.checkpoints.list(done.id).data
    steps = [checkpoint.step_number for checkpoint in checkpoints]
    assert steps and steps == sorted(steps, reverse=True) and all(step % 3 == 0 for step in steps)
    for checkpoint in checkpoints:
        assert checkpoint.object == "fine_tuning.job.checkpoint" and checkpoint.fine_tuning_job_id == done.id
        assert checkpoint.metrics.step == checkpoint.step_number and checkpoint.metrics.train_loss > 0
        assert checkpoint.metrics.valid_loss > 0
        assert checkpoint.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-{checkpoint.step_number}"

    models = {model.id: model for model in client.models.list()}
    assert models[done.fine_tuned_model].owned_by == tenant.organization.slug
    assert models["tiny-gpt2"].owned_by == "lode" and models["tiny-gpt2"].object == "model"
    retrieved = client.models.retrieve(done.fine_tuned_model)
    assert (retrieved.id, retrieved.owned_by) == (done.fine_tuned_model, tenant.organization.slug)

    # The model the job made answers, whole and streamed (greedy: the same text in pieces), and
    # the tiny diffusion model draws.
    messages = [{"role": "system", "content": "You are a support agent."},
                {"role": "user", "content": f"Question about my {TRAINING_WORDS[0]}?"}]
    whole = client.chat.completions.create(model=done.fine_tuned_model, messages=messages, max_tokens=10, temperature=0)
    assert whole.object == "chat.completion" and whole.model == done.fine_tuned_model
    assert whole.choices[0].message.role == "assistant" and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens >= 1
    chunks = list(client.chat.completions.create(model=done.fine_tuned_model, messages=messages, max_tokens=10,
                                                 temperature=0, stream=True, stream_options={"include_usage": True}))
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == (
        whole.choices[0].message.content)
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    drawn = client.images.generate(model="tiny-sd", prompt="a parcel on a doorstep", size="64x64",
                                   response_format="b64_json", extra_body={"steps": 2, "seed": 5})
    assert drawn.data[0].b64_json and drawn.created > 0

    processed = client.files.retrieve(uploaded.id)
    assert processed.status == "processed" and processed.status_details is None
    assert [found.id for found in client.files.list()] == [uploaded.id]
    assert client.files.content(uploaded.id).content == data  # the bytes as uploaded

    # A second job, cancelled; the list pages one job at a time through `after`.
    # Long enough (100 epochs) that the cancel lands while it runs, not after it finished.
    second = client.fine_tuning.jobs.create(model="tiny-gpt2", training_file=uploaded.id,
                                            hyperparameters={"n_epochs": 100}, seed=7)
    assert second.seed == 7
    client.fine_tuning.jobs.cancel(second.id)
    cancelled = _until(lambda: client.fine_tuning.jobs.retrieve(second.id),
                       lambda found: found.status in ("succeeded", "failed", "cancelled"), timeout=120,
                       message="the second fine-tune to stop")
    assert cancelled.status == "cancelled"
    assert [found.id for found in client.fine_tuning.jobs.list(limit=1)] == [second.id, done.id]
    with pytest.raises(openai.ConflictError) as finished:  # a finished job cannot be cancelled
        client.fine_tuning.jobs.cancel(second.id)
    assert _error(finished.value)["type"] == "invalid_request_error"

    # A file a fine-tuned model was trained on is kept; another goes, with its dataset.
    with pytest.raises(openai.ConflictError) as kept:
        client.files.delete(uploaded.id)
    assert _error(kept.value)["param"] == "file_id"
    other = client.files.create(file=("other.jsonl", _chat_jsonl(5, seed=1)), purpose="fine-tune")
    client.files.wait_for_processing(other.id, poll_interval=0.3, max_wait_seconds=60)
    deleted = client.files.delete(other.id)
    assert (deleted.id, deleted.deleted) == (other.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(other.id)
    assert [found.id for found in client.files.list()] == [uploaded.id]


def test_the_openai_client_gets_openai_errors(live_server, celery_worker, make_tenant, base_models):
    base_models("tiny-gpt2")
    tenant, stranger = make_tenant(), make_tenant()
    client, strangers = _client(live_server, tenant.user), _client(live_server, stranger.user)
    lines = b"".join(orjson.dumps({"prompt": f"Where is parcel {n}?", "completion": f"Parcel {n} is on its way."}) + b"\n"
                     for n in range(12))
    uploaded = client.files.create(file=("pairs.jsonl", lines), purpose="fine-tune")
    ready = client.files.wait_for_processing(uploaded.id, poll_interval=0.3, max_wait_seconds=60)
    assert ready.status == "processed"  # prompt/completion lines: an instruction dataset

    with pytest.raises(openai.BadRequestError) as unknown_model:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=uploaded.id)
    error = _error(unknown_model.value)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "model", "model_not_found")

    with pytest.raises(openai.BadRequestError) as zero_epochs:
        client.fine_tuning.jobs.create(model="tiny-gpt2", training_file=uploaded.id, hyperparameters={"n_epochs": 0})
    error = _error(zero_epochs.value)
    assert error["param"] == "hyperparameters.n_epochs" and error["message"].startswith("hyperparameters.n_epochs:")

    with pytest.raises(openai.BadRequestError) as bad_method:
        client.fine_tuning.jobs.create(model="tiny-gpt2", training_file=uploaded.id,
                                       method={"type": "supervised", "supervised": {"hyperparameters": {
                                           "learning_rate_multiplier": -1}}})
    assert _error(bad_method.value)["param"] == "method.supervised.hyperparameters.learning_rate_multiplier"

    with pytest.raises(openai.BadRequestError) as wrong_purpose:
        client.files.create(file=("pairs.jsonl", lines), purpose="assistants")
    assert _error(wrong_purpose.value)["param"] == "purpose"
    with pytest.raises(openai.BadRequestError) as not_jsonl:
        client.files.create(file=("notes.jsonl", b"just some text\n"), purpose="fine-tune")
    assert _error(not_jsonl.value)["param"] == "file"

    # Another tenant's file and job read as missing ones.
    with pytest.raises(openai.NotFoundError) as foreign_file:
        strangers.files.retrieve(uploaded.id)
    assert _error(foreign_file.value)["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        strangers.files.content(uploaded.id)
    with pytest.raises(openai.BadRequestError) as foreign_training_file:
        strangers.fine_tuning.jobs.create(model="tiny-gpt2", training_file=uploaded.id)
    assert _error(foreign_training_file.value)["param"] == "training_file"
    with pytest.raises(openai.NotFoundError):
        strangers.fine_tuning.jobs.retrieve("ftjob-" + "0" * 32)
    with pytest.raises(openai.NotFoundError) as no_model:
        strangers.models.retrieve("no-such-model")
    assert _error(no_model.value)["code"] == "model_not_found"
    assert strangers.files.list().data == []

    for key in ("lode_sk_nope_nope_nope", "sk-not-a-lode-key"):
        wrong = OpenAI(api_key=key, base_url=live_server.url + "/v1", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as refused:
            wrong.models.list()
        assert _error(refused.value)["type"] == "authentication_error"

    datasets_only = _client(live_server, tenant.user, scopes=["datasets:read", "datasets:write"])
    with pytest.raises(openai.PermissionDeniedError) as denied:
        datasets_only.fine_tuning.jobs.list()
    error = _error(denied.value)
    assert error["type"] == "permission_error" and "training:read" in error["message"]
    assert [found.id for found in datasets_only.files.list()] == [uploaded.id]
