"""Generation throughput benchmark: 64 requests of varied prompt and output lengths sent at once to
Lode's batching text engine (workers.generation.engine.TextEngine), against a baseline in the same
run that calls `model.generate` for one request after another. Then the same 64 requests spread
over 8 different LoRA adapters of the base model against all of them on one adapter.

    make models                                             # builds tiny-gpt2 offline, once
    .venv/bin/python bench/generation_throughput.py --quick   # under two minutes on 2 CPUs
    .venv/bin/python bench/generation_throughput.py           # a few minutes

- Model: tiny-gpt2 from <MODEL_CACHE_DIR>/build/tiny-gpt2 (nothing downloads). Adapters: 8 LoRA
  adapters (rank 8 on c_attn/c_proj/c_fc) with random weights, saved to a temporary folder, as 8
  fine-tunes of the base would be.
- Requests, from a fixed seed: prompts of 4-120 tokens, max_tokens 8-96, greedy decoding (the
  same tokens on both sides, so both do the same work; the outputs are compared), the end of
  sequence ignored by neither side.
- Figures: tokens/s = generated tokens / wall time from the first submission to the last token;
  latency = finish - submission; time to first token = first token - submission. The baseline's
  requests all arrive at the start too and wait their turn, as they would behind one server that
  serves one at a time; its first token is timed by a logits processor.
- Rounds: --rounds (3, 2 with --quick) alternating which side runs first; medians. Targets on this
  machine: at least 4x the baseline's tokens/s; the 8-adapter mix at least 0.7x one adapter's.
- On a CUDA machine it then runs the same requests on a ~0.5B-parameter model in bf16 on the GPU
  (`large_run`): the Qwen2.5-0.5B shape (hidden 896, 14 heads and 2 key/value heads, feed-forward
  4864) with 30 layers over tiny-gpt2's 50,257-token vocabulary, 0.49B parameters, random weights
  built on the device (nothing downloads), against model.generate one request at a time on the
  same weights; target at least 10x. Memory bandwidth achieved = weight bytes x forward passes /
  wall time (every pass reads every weight once; the KV cache left out, so a lower bound), set
  against the device's measured copy bandwidth (read + write of a 1 GiB buffer) and its data-sheet
  peak where the device is known. `--large-on-cpu` runs that code path on the CPU with a scaled-down
  config of the same architecture (a dry run; no figures to judge).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "platform"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lode.settings.dev")
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")

from bench.harness import BenchError, log, percentile, run_cli  # noqa: E402

SEED = 20261123
TARGET_RATIO = 4.0
TARGET_MIX = 0.7


def _folder() -> Path:
    import django
    from django.conf import settings

    django.setup()
    folder = Path(settings.MODEL_CACHE_DIR) / "build" / "tiny-gpt2"
    if not (folder / "config.json").is_file():
        raise BenchError(f"no tiny-gpt2 under {folder}: run `make models` first")
    return folder


def _requests(tokenizer, count: int, rng: random.Random) -> list[tuple[list[int], int]]:
    vocabulary = [token for token in range(len(tokenizer)) if token not in tokenizer.all_special_ids]
    return [([rng.choice(vocabulary) for _ in range(rng.randint(4, 120))], rng.randint(8, 96)) for _ in range(count)]


def _summary(tokens: int, seconds: float, latencies: list[float], firsts: list[float]) -> dict:
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "ttft_p50": percentile(firsts, 50), "ttft_p95": percentile(firsts, 95)}


def run_engine(engine, requests, adapters: list[str | None]) -> tuple[dict, list[list[int]]]:
    from workers.generation.engine import Request, SamplingParams

    started = time.monotonic()
    submitted = engine.submit_many([Request(prompt_ids=ids, adapter=adapter, params=SamplingParams(
        max_tokens=max_tokens, temperature=0)) for (ids, max_tokens), adapter in zip(requests, adapters)])
    for request in submitted:
        request.wait(600)
        if request.error:
            raise BenchError(f"engine request failed: {request.error}")
    seconds = max(request.finished_at for request in submitted) - started
    tokens = sum(len(request.output_ids) + (request.finish_reason == "stop") for request in submitted)
    return (_summary(tokens, seconds, [r.finished_at - r.submitted_at for r in submitted],
                     [r.first_token_at - r.submitted_at for r in submitted]),
            [request.output_ids for request in submitted])


def run_baseline(model, tokenizer, requests) -> tuple[dict, list[list[int]]]:
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class FirstToken(LogitsProcessor):
        def __init__(self):
            self.at = None

        def __call__(self, input_ids, scores):
            if self.at is None:
                self.at = time.monotonic()
            return scores

    started = time.monotonic()
    latencies, firsts, outputs, tokens = [], [], [], 0
    with torch.inference_mode():
        for ids, max_tokens in requests:
            first = FirstToken()
            generated = model.generate(torch.tensor([ids], device=model.device), max_new_tokens=max_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList([first]))
            new = generated[0, len(ids):].tolist()
            tokens += len(new)
            if new and new[-1] == tokenizer.eos_token_id:
                new = new[:-1]
            outputs.append(new)
            latencies.append(time.monotonic() - started)
            firsts.append(first.at - started)
    return _summary(tokens, time.monotonic() - started, latencies, firsts), outputs


def _adapters(folder: Path, count: int, out: Path) -> dict[str, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    made = {}
    for number in range(count):
        torch.manual_seed(SEED + number)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder), LoraConfig(
            r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True,
            init_lora_weights=False))
        path = out / f"adapter-{number}"
        model.save_pretrained(path)
        made[f"adapter-{number}"] = path
    return made


# Data-sheet memory bandwidth, bytes/s, by a substring of torch.cuda.get_device_name().
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100 NVL": 3.9e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100-SXM4-80GB": 2.04e12,
                  "A100 80GB PCIe": 1.94e12, "A100": 1.555e12, "L40S": 0.864e12, "L4": 0.3e12, "A10G": 0.6e12}
TARGET_LARGE = 10.0
LARGE_CONFIG = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 30, "num_attention_heads": 14,
                "num_key_value_heads": 2, "max_position_embeddings": 4096, "tie_word_embeddings": True}
DRY_RUN_CONFIG = {"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "max_position_embeddings": 1024, "tie_word_embeddings": True}


def large_model(tokenizer, device: str, dtype, config: dict):
    """A Qwen2-architecture causal LM with random weights, built directly on the device."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(SEED)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(Qwen2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                                             eos_token_id=tokenizer.eos_token_id, **config), dtype=dtype)
    return model.eval()


def copy_bandwidth(device: str) -> float:
    """Bytes/s of a device-to-device copy of 1 GiB (read and write counted), median of 5."""
    import torch

    source = torch.empty(2**30, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    rates = []
    for _ in range(5):
        torch.cuda.synchronize()
        started = time.perf_counter()
        target.copy_(source)
        torch.cuda.synchronize()
        rates.append(2 * source.numel() / (time.perf_counter() - started))
    del source, target
    torch.cuda.empty_cache()
    return statistics.median(rates)


def large_run(tokenizer, requests, *, device: str, dtype, config: dict, rounds: int) -> dict:
    """The engine against model.generate one at a time on a larger model (see the docstring)."""
    from workers.generation.engine import TextEngine

    model = large_model(tokenizer, device, dtype, config)
    parameters = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    log(f"large model: Qwen2 architecture, {parameters / 1e9:.3f}B parameters, {weight_bytes / 2**30:.2f} GiB "
        f"of {str(dtype).replace('torch.', '')} weights on {device}")
    engine = TextEngine(model, tokenizer, device=device, max_batch=len(requests)).start()
    try:
        run_engine(engine, requests[:4], [None] * 4)  # warm-up
        run_baseline(model, tokenizer, requests[:1])
        results: dict[str, list] = {"lode": [], "baseline": []}
        for number in range(rounds):
            for side in (("lode", "baseline") if number % 2 == 0 else ("baseline", "lode")):
                if side == "lode":
                    passes = engine.stats.forward_passes
                    figures, lode_out = run_engine(engine, requests, [None] * len(requests))
                    figures["passes"] = engine.stats.forward_passes - passes
                    figures["bandwidth"] = weight_bytes * figures["passes"] / figures["seconds"]
                else:
                    figures, base_out = run_baseline(model, tokenizer, requests)
                    figures["bandwidth"] = weight_bytes * figures["tokens"] / figures["seconds"]
                results[side].append(figures)
                log(f"  large round {number + 1} {side}: {figures['tokens_per_s']:,.0f} tokens/s, p50 {figures['p50']:.2f} s")
            same = sum(a == b for a, b in zip(lode_out, base_out))
            log(f"  large round {number + 1}: outputs equal to the baseline's: {same}/{len(requests)}")
    finally:
        engine.stop()
    medians = {side: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for side, rows in results.items()}
    return {"parameters": parameters, "weight_bytes": weight_bytes, "same": same, **medians}


def _line(name: str, figures: dict) -> str:
    return (f"{name:<46} {figures['tokens_per_s']:>9,.0f} {figures['p50']:>8.2f} {figures['p95']:>8.2f} "
            f"{figures['ttft_p50']:>9.2f} {figures['ttft_p95']:>9.2f} {figures['tokens']:>7}")


def run(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.generation.engine import TextEngine

    torch.manual_seed(SEED)
    folder = _folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    count = 32 if args.quick else args.requests
    rounds = 2 if args.quick else args.rounds
    requests = _requests(tokenizer, count, random.Random(SEED))
    log(f"{count} requests: prompts {min(len(i) for i, _ in requests)}-{max(len(i) for i, _ in requests)} tokens, "
        f"max_tokens {min(m for _, m in requests)}-{max(m for _, m in requests)}; greedy; {rounds} rounds; "
        f"torch threads {torch.get_num_threads()}")
    baseline_model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with tempfile.TemporaryDirectory(prefix="lode-bench-adapters-") as temporary:
        adapters = _adapters(folder, 8, Path(temporary))
        engine = TextEngine(AutoModelForCausalLM.from_pretrained(folder), tokenizer, max_batch=64,
                            adapter_folder=adapters.__getitem__).start()
        try:
            run_engine(engine, requests[:4], [None] * 4)  # warm-up (first-call allocations), not timed
            names = list(adapters)
            results = {"lode": [], "baseline": [], "one": [], "mix": []}
            for number in range(rounds):
                order = ("lode", "baseline") if number % 2 == 0 else ("baseline", "lode")
                for side in order:
                    if side == "lode":
                        passes = engine.stats.forward_passes
                        figures, lode_out = run_engine(engine, requests, [None] * count)
                        figures["passes"] = engine.stats.forward_passes - passes
                    else:
                        figures, base_out = run_baseline(baseline_model, tokenizer, requests)
                    results[side].append(figures)
                    log(f"  round {number + 1} {side}: {figures['tokens_per_s']:,.0f} tokens/s, p50 {figures['p50']:.2f} s")
                same = sum(a == b for a, b in zip(lode_out, base_out))
                one, _ = run_engine(engine, requests, [names[0]] * count)
                mix, _ = run_engine(engine, requests, [names[i % 8] for i in range(count)])
                results["one"].append(one)
                results["mix"].append(mix)
                log(f"  round {number + 1} adapters: one {one['tokens_per_s']:,.0f} tokens/s, "
                    f"8-adapter mix {mix['tokens_per_s']:,.0f} tokens/s; outputs equal to the baseline's: {same}/{count}")
        finally:
            engine.stop()

    def median(side: str) -> dict:
        return {key: statistics.median(r[key] for r in results[side]) for key in results[side][0]}

    lode, base, one, mix = median("lode"), median("baseline"), median("one"), median("mix")
    ratio = lode["tokens_per_s"] / base["tokens_per_s"]
    mix_ratio = mix["tokens_per_s"] / one["tokens_per_s"]
    log()
    log(f"{'side (medians of ' + str(rounds) + ' rounds)':<46} {'tokens/s':>9} {'p50 s':>8} {'p95 s':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'tokens':>7}")
    log(_line("lode: TextEngine, continuous batching", lode))
    log(_line("baseline: model.generate, one at a time", base))
    log(_line("lode, all on one LoRA adapter", one))
    log(_line("lode, 8 LoRA adapters mixed in the batch", mix))
    log(f"forward passes for the engine's {lode['tokens']:.0f} tokens: {lode['passes']:.0f} "
        f"(the baseline: one a token, {base['tokens']:.0f})")
    log(f"ratio lode / baseline tokens/s: {ratio:.2f}x (target {TARGET_RATIO}x); 8-adapter mix / one adapter: "
        f"{mix_ratio:.2f}x (target {TARGET_MIX}x)")
    large = None
    if torch.cuda.is_available() or args.large_on_cpu:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        log()
        large = large_run(tokenizer, requests, device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32,
                          config=LARGE_CONFIG if device == "cuda" else DRY_RUN_CONFIG, rounds=rounds)
        large_ratio = large["lode"]["tokens_per_s"] / large["baseline"]["tokens_per_s"]
        log(f"{'large model (medians)':<46} {'tokens/s':>9} {'p50 s':>8} {'p95 s':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'tokens':>7}")
        log(_line("lode: TextEngine, continuous batching", large["lode"]))
        log(_line("baseline: model.generate, one at a time", large["baseline"]))
        log(f"large model ratio: {large_ratio:.2f}x (target {TARGET_LARGE:g}x on a GPU with the 0.5B config); "
            f"forward passes {large['lode']['passes']:.0f} for {large['lode']['tokens']:.0f} tokens")
        if device == "cuda":
            name = torch.cuda.get_device_name()
            measured = copy_bandwidth(device)
            sheet = next((value for key, value in PEAK_BANDWIDTH.items() if key in name), None)
            log(f"memory bandwidth on {name}: Lode {large['lode']['bandwidth'] / 1e9:,.0f} GB/s of weights read, the "
                f"baseline {large['baseline']['bandwidth'] / 1e9:,.0f} GB/s; device copy {measured / 1e9:,.0f} GB/s"
                + (f", data sheet {sheet / 1e9:,.0f} GB/s: Lode at {large['lode']['bandwidth'] / sheet:.1%} of the peak"
                   if sheet else ", data-sheet peak unknown for this device")
                + f" ({large['lode']['bandwidth'] / measured:.1%} of the measured copy rate)")
            log(f"gpu_0p5b tokens_per_s={large['lode']['tokens_per_s']:.0f} baseline={large['baseline']['tokens_per_s']:.0f} "
                f"ratio={large_ratio:.2f} bandwidth_gbs={large['lode']['bandwidth'] / 1e9:.0f} "
                f"met={'yes' if large_ratio >= TARGET_LARGE else 'no'}")
        else:
            log("large model: a dry run of the GPU code path on the CPU with a scaled-down config; nothing to judge")
    else:
        log("GPU part (~0.5B bf16, memory bandwidth): skipped, there is no CUDA device")
    met = ratio >= TARGET_RATIO and mix_ratio >= TARGET_MIX
    if large is not None and torch.cuda.is_available():
        met = met and large["lode"]["tokens_per_s"] / large["baseline"]["tokens_per_s"] >= TARGET_LARGE
    print(f"BENCH generation_throughput tokens_per_s={lode['tokens_per_s']:.0f} baseline={base['tokens_per_s']:.0f} "
          f"ratio={ratio:.2f} target=\"≥{TARGET_RATIO:g}x baseline tokens/s, 8-adapter mix ≥{TARGET_MIX}x one adapter "
          f"(measured {mix_ratio:.2f}x); on a GPU ≥{TARGET_LARGE:g}x with the 0.5B bf16 model\" met={'yes' if met else 'no'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 requests, 2 rounds (under two minutes)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--large-on-cpu", action="store_true",
                        help="without CUDA, run the large-model code path on the CPU with a scaled-down config")
    return run_cli("generation_throughput", run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
