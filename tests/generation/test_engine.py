"""The batching text engine on the tiny offline GPT-2 (no database): batching is real (fewer forward
passes than requests x tokens), a seeded request gives the same tokens alone or in a batch, LoRA
adapters of one base share a batch and each row gets its own adapter, stop sequences, streaming,
eviction, and bad parameters."""
from __future__ import annotations

import threading

import pytest
import torch

from workers.generation.engine import Request, SamplingParams, TextEngine


@pytest.fixture(scope="module")
def gpt2_folder():
    from django.conf import settings

    from workers.tiny_models import TINY_GPT2
    from workers.tiny_models.build import build_all

    [built] = [model for model in build_all(root=settings.MODEL_CACHE_DIR / "build", names=[TINY_GPT2])
               if model.name == TINY_GPT2]
    return built.folder


def _engine(folder, **options) -> TextEngine:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return TextEngine(AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), **options)


@pytest.fixture(scope="module")
def adapters(gpt2_folder, tmp_path_factory):
    """Two LoRA adapters of tiny-gpt2 with different random weights (as two fine-tunes would have)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = {}
    for number, name in enumerate(("support", "legal")):
        torch.manual_seed(100 + number)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(gpt2_folder), LoraConfig(
            r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True, init_lora_weights=False))
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        folders[name] = folder
    return folders


def _prompts(tokenizer, count: int) -> list[list[int]]:
    return [tokenizer(f"Question about my order number {i}? " * (1 + i % 4))["input_ids"] for i in range(count)]


def test_concurrent_requests_share_forward_passes_and_match_their_solo_runs(gpt2_folder):
    engine = _engine(gpt2_folder).start()
    try:
        prompts = _prompts(engine.tokenizer, 12)
        params = [SamplingParams(max_tokens=6 + 3 * i, temperature=0.8, top_p=0.9, top_k=40, repetition_penalty=1.1,
                                 seed=i) for i in range(12)]
        solo = [engine.generate(ids, p) for ids, p in zip(prompts, params)]
        alone = [request.output_ids for request in solo]
        before_passes, before_tokens = engine.stats.forward_passes, engine.stats.tokens

        together = engine.submit_many([Request(prompt_ids=ids, params=p) for ids, p in zip(prompts, params)])
        for request in together:
            request.wait(120)

        passes = engine.stats.forward_passes - before_passes
        tokens = engine.stats.tokens - before_tokens
        assert [request.output_ids for request in together] == alone
        assert [request.finish_reason for request in together] == [request.finish_reason for request in solo]
        # Every sampled token counts, the end-of-sequence token of a request that stopped too.
        assert tokens == sum(len(ids) + (request.finish_reason == "stop") for ids, request in zip(alone, solo))
        assert passes < tokens / 4  # one pass served many requests' tokens
        assert engine.stats.max_running == 12  # all admitted together
        assert all(request.first_token_at <= request.finished_at for request in together)
    finally:
        engine.stop()


def test_requests_for_different_adapters_share_a_batch_and_each_gets_its_own(gpt2_folder, adapters):
    engine = _engine(gpt2_folder, adapter_folder=lambda name: adapters[name]).start()
    try:
        prompts = _prompts(engine.tokenizer, 6)
        names = ["support", "legal", None, "support", "legal", None]
        params = SamplingParams(max_tokens=10, temperature=0)
        alone = [engine.generate(ids, params, adapter=name).output_ids for ids, name in zip(prompts, names)]
        before = engine.stats.decode_passes

        together = engine.submit_many([Request(prompt_ids=ids, params=params, adapter=name)
                                       for ids, name in zip(prompts, names)])
        for request in together:
            request.wait(120)

        assert [request.output_ids for request in together] == alone
        # Six requests on three adapters, one decode pass a token for all of them (not six).
        assert engine.stats.decode_passes - before <= params.max_tokens
        assert engine.stats.max_running == 6
        # The adapters change what the model says: the same prompt differs by adapter.
        same_prompt = prompts[0]
        by_adapter = {name: engine.generate(same_prompt, params, adapter=name).output_ids for name in ("support", "legal", None)}
        assert len({tuple(ids) for ids in by_adapter.values()}) == 3
    finally:
        engine.stop()


def test_least_recently_used_adapter_is_evicted_past_the_budget(gpt2_folder, adapters):
    engine = _engine(gpt2_folder, adapter_folder=lambda name: adapters[name], max_adapter_bytes=1).start()
    try:
        engine.generate(_prompts(engine.tokenizer, 1)[0], SamplingParams(max_tokens=2), adapter="support")
        engine.generate(_prompts(engine.tokenizer, 1)[0], SamplingParams(max_tokens=2), adapter="legal")

        assert list(engine.adapters) == ["legal"]
        again = engine.generate(_prompts(engine.tokenizer, 1)[0], SamplingParams(max_tokens=2, temperature=0),
                                adapter="support")
        assert again.finish_reason == "length" and list(engine.adapters) == ["support"]
    finally:
        engine.stop()


def test_stop_sequences_cut_the_text_and_streaming_delivers_it_in_pieces(gpt2_folder):
    engine = _engine(gpt2_folder).start()
    try:
        prompt = _prompts(engine.tokenizer, 1)[0]
        free = engine.generate(prompt, SamplingParams(max_tokens=30, temperature=0))
        stop = free.text[5:8]
        assert stop and stop in free.text

        request = engine.submit(Request(prompt_ids=prompt, params=SamplingParams(max_tokens=30, temperature=0, stop=(stop,))))
        pieces = []
        reader = threading.Thread(target=lambda: pieces.extend(iter(request.deltas.get, None)))
        reader.start()
        request.wait(60)
        reader.join(10)

        assert request.finish_reason == "stop"
        assert request.text == free.text[:free.text.find(stop)]
        assert "".join(pieces) == request.text and len(pieces) > 1
    finally:
        engine.stop()


@pytest.mark.parametrize("params, words", [
    (SamplingParams(max_tokens=0), "max_tokens"),
    (SamplingParams(max_tokens=-5), "max_tokens"),
    (SamplingParams(temperature=-1), "temperature"),
    (SamplingParams(top_p=0), "top_p"),
    (SamplingParams(top_k=-1), "top_k"),
    (SamplingParams(max_tokens=10_000), "context"),
])
def test_bad_parameters_are_refused_before_the_queue(gpt2_folder, params, words):
    engine = _engine(gpt2_folder)

    with pytest.raises(ValueError) as raised:
        engine.submit(Request(prompt_ids=[5, 6, 7], params=params))

    assert words in str(raised.value)
    assert not engine._waiting


def test_an_adapter_that_cannot_load_fails_its_requests_and_the_engine_goes_on(gpt2_folder, tmp_path):
    engine = _engine(gpt2_folder, adapter_folder=lambda name: tmp_path / "missing").start()
    try:
        broken = engine.generate([5, 6, 7], SamplingParams(max_tokens=3), adapter="ghost")
        fine = engine.generate([5, 6, 7], SamplingParams(max_tokens=3))

        assert broken.finish_reason == "error" and broken.error
        assert fine.error is None and fine.finish_reason in ("length", "stop")
    finally:
        engine.stop()


def test_an_adapter_served_in_a_mixed_batch_says_what_peft_says_for_it_alone(gpt2_folder, adapters):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    engine = _engine(gpt2_folder, adapter_folder=lambda name: adapters[name]).start()
    try:
        prompts = _prompts(engine.tokenizer, 3)
        params = SamplingParams(max_tokens=12, temperature=0)
        served = engine.submit_many([Request(prompt_ids=ids, params=params, adapter=name)
                                     for ids, name in zip(prompts, ("legal", "support", None))])
        for request in served:
            request.wait(60)
    finally:
        engine.stop()

    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(gpt2_folder), adapters["legal"]).eval()
    with torch.no_grad():
        output = reference.generate(input_ids=torch.tensor([prompts[0]]), max_new_tokens=12, do_sample=False,
                                    pad_token_id=engine.tokenizer.pad_token_id)
    expected = output[0, len(prompts[0]):].tolist()
    if expected and expected[-1] == engine.tokenizer.eos_token_id:
        expected = expected[:-1]
    assert served[0].output_ids == expected


def test_a_grouped_query_attention_model_batches_to_the_tokens_generate_gives(gpt2_folder):
    """The GPU benchmark's architecture (Qwen2: rotary positions, 2 key/value heads for 4 query
    heads), scaled down and with random weights: batched greedy outputs equal model.generate's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    tokenizer = AutoTokenizer.from_pretrained(gpt2_folder)
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_config(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id)).eval()
    prompts = _prompts(tokenizer, 6)
    lengths = [5 + 4 * i for i in range(6)]
    with torch.inference_mode():
        alone = [model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                                pad_token_id=tokenizer.eos_token_id)[0, len(ids):].tolist() for ids, n in zip(prompts, lengths)]
    engine = TextEngine(model, tokenizer).start()
    try:
        requests = engine.submit_many([Request(prompt_ids=ids, params=SamplingParams(max_tokens=n, temperature=0))
                                       for ids, n in zip(prompts, lengths)])
        for request in requests:
            assert request.wait(60) and request.error is None
    finally:
        engine.stop()

    assert [r.output_ids for r in requests] == [[t for t in out if t != tokenizer.eos_token_id] for out in alone]
    assert engine.stats.forward_passes < sum(lengths)
