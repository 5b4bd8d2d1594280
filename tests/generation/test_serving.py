"""Generation through the real generation server process (workers/generation/server.py) over Redis:
a base model and a tenant's LoRA fine-tune served from S3, concurrent requests, metered tokens, and
the requests refused before they reach the server."""
from __future__ import annotations

import threading
import uuid

import pytest
import torch

from lode.core.errors import NotFound, ValidationFailed
from lode.generation.completions import completion_start, completion_text
from tests.conftest import system

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "owner", "system"])


def _adapter_model(tenant, base_model, tmp_path, *, name: str):
    """A tenant's fine-tuned LoRA model, as a fine-tune registers it (a random adapter here)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lode.training.models import TunedModel
    from lode.training.services import tuned_model_prefix
    from tenants.db_context import tenant_atomic
    from workers.model_store import materialize_base_model
    from workers.tiny_models.manifest import files_revision, folder_files

    torch.manual_seed(7)
    folder = tmp_path / name
    get_peft_model(AutoModelForCausalLM.from_pretrained(materialize_base_model(base_model.name)), LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True, init_lora_weights=False,
    )).save_pretrained(folder)
    model_id = uuid.uuid4()
    from lode.core import artifacts

    files = folder_files(folder)
    for entry in files:
        artifacts.file_put(tenant_id=tenant.organization.id, key=f"{tuned_model_prefix(model_id)}/{entry['path']}",
                           path=folder / entry["path"])
    from tests.training.conftest import instruction_rows, version_from_rows

    version = version_from_rows(tenant, instruction_rows(5), modality="instruction")
    with tenant_atomic(tenant.organization.id):
        TunedModel.objects.create(
            id=model_id, tenant_id=tenant.organization.id, name=name, base_model=base_model, task="sft",
            task_type="causal_lm", method="lora", architecture=base_model.architecture, is_adapter=True,
            artifact_prefix=tuned_model_prefix(model_id), manifest={"files": files, "revision": files_revision(files)},
            train_version=version)
    return folder


def test_base_and_fine_tuned_models_generate_on_the_server_and_tokens_are_metered(
        generation_server, make_tenant, base_models, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lode.billing.models import UsageEvent
    from workers.model_store import materialize_base_model

    base = base_models("tiny-gpt2")["tiny-gpt2"]
    tenant = make_tenant()
    tenant_id = tenant.organization.id
    adapter_folder = _adapter_model(tenant, base, tmp_path, name="ft-support")
    messages = [{"role": "user", "content": "Question about my parcel number 12?"}]
    greedy = {"max_tokens": 12, "temperature": 0}

    plain = completion_text(completion_start(tenant_id=tenant_id, model="tiny-gpt2", messages=messages, params=greedy),
                            tenant_id=tenant_id)
    tuned_run = completion_start(tenant_id=tenant_id, model="ft-support", messages=messages, params=greedy)
    tuned = completion_text(tuned_run, tenant_id=tenant_id)

    # What peft says for the same adapter, prompt and greedy decoding.
    folder = materialize_base_model("tiny-gpt2")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), adapter_folder).eval()
    ids = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    encoded = tokenizer(ids, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        output = reference.generate(**encoded, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(output[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True)

    assert tuned["text"] == expected and tuned["text"] != plain["text"]
    assert tuned["usage"]["prompt_tokens"] == encoded["input_ids"].shape[1]
    assert 1 <= tuned["usage"]["completion_tokens"] <= 12
    metered = {event.idempotency_key: event for event in system(UsageEvent).filter(tenant_id=tenant_id)
               if event.idempotency_key.startswith(f"generation:{tuned_run.id}:")}
    assert metered[f"generation:{tuned_run.id}:input"].quantity == tuned["usage"]["prompt_tokens"]
    assert metered[f"generation:{tuned_run.id}:output"].quantity == tuned["usage"]["completion_tokens"]
    assert metered[f"generation:{tuned_run.id}:output"].dimension == "tiny"


def test_concurrent_requests_all_complete_and_stream_in_pieces(generation_server, make_tenant, base_models):
    base_models("tiny-gpt2")
    tenant = make_tenant()
    tenant_id = tenant.organization.id
    results: dict[int, list] = {}

    def ask(number: int) -> None:
        run = completion_start(tenant_id=tenant_id, model="tiny-gpt2", prompt=f"Order {number} is",
                               params={"max_tokens": 16, "temperature": 0.7, "seed": number})
        results[number] = list(run.events)

    threads = [threading.Thread(target=ask, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert sorted(results) == list(range(8))
    for events in results.values():
        assert events[-1]["done"] and events[-1]["error"] is None
        assert all("delta" in event for event in events[:-1])


def test_requests_are_refused_before_the_server_with_the_field_named(make_tenant, base_models):
    from lode.billing.services import QuotaExceeded, quota_set

    base_models("tiny-gpt2", "tiny-gpt2-classifier")
    tenant = make_tenant()
    stranger = make_tenant()
    tenant_id = tenant.organization.id
    messages = [{"role": "user", "content": "hello"}]

    cases = [
        ({"params": {"max_tokens": -1}}, "max_tokens"),
        ({"params": {"max_tokens": 10**6}}, "max_tokens"),
        ({"params": {"temperature": 5}}, "temperature"),
        ({"params": {"top_p": 0}}, "top_p"),
        ({"params": {"stop": ["a", "b", "c", "d", "e"]}}, "stop"),
        ({"params": {"seed": "x"}}, "seed"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages"),
        ({"messages": None, "prompt": ""}, "prompt"),
        ({"model": "tiny-gpt2-classifier"}, "model"),
    ]
    for change, field in cases:
        arguments = {"tenant_id": tenant_id, "model": "tiny-gpt2", "messages": messages, **change}
        with pytest.raises(ValidationFailed) as raised:
            completion_start(**arguments)
        assert raised.value.details["field"] == field, change
    with pytest.raises(NotFound):
        completion_start(tenant_id=stranger.organization.id, model="ft-nonexistent", messages=messages)

    quota_set(tenant_id=tenant_id, meter="output_tokens", kind="hard", limit=10)
    with pytest.raises(QuotaExceeded):
        completion_start(tenant_id=tenant_id, model="tiny-gpt2", messages=messages, params={"max_tokens": 64})
