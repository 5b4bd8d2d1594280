"""Fine-tune throughput benchmark: causal-LM SFT with LoRA on variable-length instruction pairs
through Lode's trainer (workers.training: build_text_runner + loop.train, padding-free packing),
against a baseline in the same run: a plain Hugging Face `transformers.Trainer` + peft script that
pads every batch to max_seq_length. Target: at least 1.5x the baseline's tokens/s (non-padding
tokens) at equal or better validation loss. On a CUDA machine it also measures Lode's model FLOPs
utilisation (MFU) on a ~0.5B-parameter Llama config (random weights, bf16); target MFU >= 40%.

    make models                                          # builds tiny-gpt2 offline, once
    .venv/bin/python bench/finetune_throughput.py --quick   # under two minutes on 2 CPUs
    .venv/bin/python bench/finetune_throughput.py           # a few minutes on 2 CPUs

- Model: tiny-gpt2 (GPT2LMHeadModel, n_embd 64, 2 layers, context 256, vocab 1024) from
  <MODEL_CACHE_DIR>/build/tiny-gpt2, loaded with from_pretrained on the folder; nothing downloads.
- Data, from a fixed seed: instruction pairs with a prompt of 3-60 and a response of 5-150 words,
  the words drawn by their corpus frequency from the words the tokenizer holds as one token (about
  one token a word, so the lengths vary as widely as the word counts), turned into examples by
  workers.training.text.chat_example (chat template, labels on the response) at max_seq_length 256.
  Both sides train on the same token ids and label masks (checked by digest), in the same batches
  and order (Lode's SFTRunner.train_batches per epoch; the baseline's dataset lists the examples
  in that order and its Trainer reads it sequentially), with the same LoRA (rank 8, alpha 16,
  dropout 0.05, c_attn/c_proj/c_fc, fan_in_fan_out), the same initial adapter weights (same seed),
  AdamW, learning rate, linear schedule without warm-up, gradient clipping at 1.0, batch size,
  epochs.
- Each side runs in a fresh interpreter per round (`--child lode|baseline SPEC`), so that its peak
  RSS (ru_maxrss) is its own; the rounds alternate which side goes first. tokens/s = non-padding
  tokens trained / seconds of the training loop: loop.train() minus its final evaluation for Lode,
  trainer.train() for the baseline (model loading and tokenisation are not timed). Each side runs
  with one torch intra-op thread by default (--threads): on a shared 2-core machine two OpenMP
  threads per process stall whenever another process holds a core (a small matmul went from 0.6
  to 17 ms), which made a side's rate swing 8x between rounds.
- Validation loss: one function for both, after training: token-mean cross-entropy over the
  response tokens of the same held-out examples, each batch right-padded with an attention mask
  (no packing, so Lode's block-diagonal masking is checked too: Lode's own in-loop value, computed
  on packed batches, is printed beside it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "platform"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lode.settings.dev")
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

from bench.harness import BenchError, child_env, child_result, log, run_cli  # noqa: E402

TARGET_RATIO = 1.5
VAL_LOSS_TOLERANCE = 0.01  # Lode's validation loss may exceed the baseline's by 1% (run-to-run noise)
TARGET_MFU = 0.40
TARGET_TEXT = "≥1.5x baseline tokens/s at equal or better validation loss"
SEED = 20261124
MODEL_NAME = "tiny-gpt2"
MAX_SEQ_LENGTH = 256
BATCH_SIZE = 8
LEARNING_RATE = 1e-3
LORA = {"lora_rank": 8, "lora_alpha": 16.0, "lora_dropout": 0.05}
PROMPT_WORDS = (3, 60)
RESPONSE_WORDS = (5, 150)
RESULT_MARK = "BENCH-FINETUNE-RESULT "
QUICK_BUDGET_S = 110.0

# Peak dense bf16 tensor throughput (FLOP/s) by device name, for MFU.
PEAK_BF16_FLOPS = (("H200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100", 989.4e12), ("A100", 312.0e12),
                   ("L40S", 362.0e12), ("L4", 121.0e12), ("A10", 125.0e12))


# --- data -----------------------------------------------------------------------------------------------


def rows_generate(tokenizer, *, count: int, seed: int) -> list[dict[str, str]]:
    """count instruction pairs: prompt 3-60 words, response 5-150 words, words drawn by their
    frequency in the tiny models' corpus among those the tokenizer holds as a single token
    (" word"), so that a word is about one token and the lengths spread as the word counts do."""
    import numpy as np

    from workers.tiny_models.text import corpus_documents

    counts: dict[str, int] = {}
    for document in corpus_documents():
        for word in document.split():
            counts[word] = counts.get(word, 0) + 1
    vocabulary = tokenizer.get_vocab()
    words = sorted(word for word in counts if word.isalpha() and len(word) > 1 and ("Ġ" + word) in vocabulary)
    if len(words) < 50:
        raise BenchError(f"the tokenizer holds only {len(words)} corpus words as single tokens; is {MODEL_NAME} the"
                         " model `make models` builds?")
    weights = np.array([counts[word] for word in words], dtype=float)
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    prompt_lengths = rng.integers(PROMPT_WORDS[0], PROMPT_WORDS[1] + 1, size=count)
    response_lengths = rng.integers(RESPONSE_WORDS[0], RESPONSE_WORDS[1] + 1, size=count)
    drawn = rng.choice(len(words), size=int(prompt_lengths.sum() + response_lengths.sum()), p=weights).tolist()
    rows, at = [], 0
    for a, b in zip(prompt_lengths.tolist(), response_lengths.tolist()):
        prompt = " ".join(words[i] for i in drawn[at:at + a])
        response = " ".join(words[i] for i in drawn[at + a:at + a + b])
        at += a + b
        rows.append({"prompt": prompt[0].upper() + prompt[1:] + "?", "response": response[0].upper() + response[1:] + "."})
    return rows


def examples_digest(examples) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.input_ids, example.labels]).encode())
    return digest.hexdigest()


def batches_digest(batches: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(batches).encode()).hexdigest()


def model_folder() -> Path:
    from django.conf import settings

    return Path(settings.MODEL_CACHE_DIR) / "build" / MODEL_NAME


def hyperparameters(*, epochs: int) -> dict[str, Any]:
    from lode.training.hyperparameters import hyperparameters_validate

    return hyperparameters_validate("sft", "lora", {
        "epochs": epochs, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "max_seq_length": MAX_SEQ_LENGTH,
        "seed": SEED % 2**31, "lr_scheduler": "linear",
        # No warm-up: transformers' linear warm-up starts at 0 on step 0, Lode's at 1/warmup; without
        # one both schedules are the same line.
        "warmup_ratio": 0.0,
        # Evaluate once, after the last step (the loop always does), and never checkpoint: the run
        # is shorter than either interval.
        "eval_every_steps": 10_000_000, "checkpoint_every_steps": 10_000_000, "log_every_steps": 10,
        "lora_target_modules": None, **LORA,
    })


# --- measurements shared by both sides ------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def validation_loss(model, examples, *, pad_id: int, device) -> float:
    """Token-mean cross-entropy over the labeled (response) tokens of `examples`, in batches of
    BATCH_SIZE right-padded with an attention mask: the same function for both sides."""
    import torch
    import torch.nn.functional as F

    from workers.training.text import IGNORE

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), BATCH_SIZE):
            chunk = examples[start:start + BATCH_SIZE]
            width = max(len(example.input_ids) for example in chunk)
            ids = torch.tensor([e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in chunk], device=device)
            labels = torch.tensor([e.labels + [IGNORE] * (width - len(e.labels)) for e in chunk], device=device)
            mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in chunk], device=device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
            targets = labels[:, 1:]
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                           ignore_index=IGNORE, reduction="sum"))
            count += int((targets != IGNORE).sum())
    return total / max(count, 1)


def _device():
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _memory_start(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)


def _memory_peak(device, rss_before: int) -> dict[str, Any]:
    import torch

    peak = _maxrss_bytes()
    result = {"rss_before": rss_before, "rss_peak": peak, "rss_increase": max(peak - rss_before, 0)}
    if device.type == "cuda":
        result["cuda_peak"] = int(torch.cuda.max_memory_allocated(device))
    return result


def _quiet() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")


# --- the two sides (child processes) ---------------------------------------------------------------------


class RecordingHooks:
    """The loop's hooks for a benchmark: records metrics and evaluations, stores nothing."""

    def __init__(self) -> None:
        self.metrics_seen: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self.checkpoints: list[int] = []
        self.step_times: list[float] = []

    def metrics(self, values: dict[str, Any]) -> None:
        self.metrics_seen.append(dict(values))

    def evaluation(self, values: dict[str, Any]) -> None:
        self.evaluations.append(dict(values))

    def checkpoint(self, step: int, data: bytes, summary: dict[str, Any]) -> None:
        self.checkpoints.append(len(data))  # the bytes are dropped

    def progress(self, fraction: float, message: str) -> None:
        self.step_times.append(time.perf_counter())  # once per optimizer step

    def check_cancelled(self) -> None:
        return None


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _load_spec_rows(spec: dict) -> tuple[list[dict], list[dict]]:
    with open(spec["data_path"]) as handle:
        data = json.load(handle)
    return data["train"], data["validation"]


def child_lode(spec: dict) -> dict:
    """Lode's path: build_text_runner (tokenizer, model, LoRA, chat_example examples, SFTRunner with
    packing) and loop.train, as the training.finetune job calls them."""
    from workers.training import loop
    from workers.training.finetune import build_text_runner

    device = _device()
    hp = hyperparameters(epochs=spec["epochs"])
    train_rows, validation_rows = _load_spec_rows(spec)
    _seed_everything(hp["seed"])
    built = build_text_runner(task="sft", method="lora", folder=Path(spec["model_folder"]), hp=hp, device=device,
                              train_rows=train_rows, validation_rows=validation_rows)
    runner = built.runner
    if not runner.packing:
        raise BenchError("the SFT runner does not pack: hyperparameter `packing` is off by default?")
    trained_batches: list[list[int]] = []
    train_loss = runner.train_loss

    def recorded_train_loss(batch):  # which examples each step trained on (a list append: not timed apart)
        trained_batches.append(list(batch))
        return train_loss(batch)

    runner.train_loss = recorded_train_loss
    evaluate = runner.evaluate
    eval_seconds = [0.0]

    def timed_evaluate():  # the loop's final evaluation is not training time
        began = time.perf_counter()
        try:
            return evaluate()
        finally:
            eval_seconds[0] += time.perf_counter() - began

    runner.evaluate = timed_evaluate
    hooks = RecordingHooks()
    val_loss_before = validation_loss(runner.model, runner.validation, pad_id=runner.pad_id, device=device)
    rss_before = _rss_bytes()
    _memory_start(device)
    began = time.perf_counter()
    result = loop.train(runner, hp, hooks)
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    seconds = time.perf_counter() - began - eval_seconds[0]
    memory = _memory_peak(device, rss_before)
    val_loss = validation_loss(runner.model, runner.validation, pad_id=runner.pad_id, device=device)
    loop_val = next((e.get("val_loss") for e in reversed(hooks.evaluations) if e.get("val_loss") is not None), None)
    return {
        "side": "lode", "seconds": seconds, "eval_seconds": eval_seconds[0], "tokens": result.tokens,
        "steps": result.steps, "val_loss": val_loss, "val_loss_before": val_loss_before, "loop_val_loss": loop_val,
        "checkpoints": len(hooks.checkpoints),
        "train_examples": len(runner.train), "validation_examples": len(runner.validation),
        "examples_digest": examples_digest(runner.train + runner.validation),
        "batches_digest": batches_digest(trained_batches), "trainable": built.trainable, "total": built.total,
        "last_train_loss": next((m["loss"] for m in reversed(hooks.metrics_seen)), None),
        "device": str(device), **memory,
    }


class _PadToMax:
    """The baseline's collator: every batch padded to max_seq_length (input_ids, labels, mask)."""

    def __init__(self, pad_id: int, width: int):
        self.pad_id = pad_id
        self.width = width

    def __call__(self, features: list[dict]) -> dict:
        import torch

        from workers.training.text import IGNORE

        ids, labels, mask = [], [], []
        for feature in features:
            pad = self.width - len(feature["input_ids"])
            ids.append(feature["input_ids"] + [self.pad_id] * pad)
            labels.append(feature["labels"] + [IGNORE] * pad)
            mask.append([1] * len(feature["input_ids"]) + [0] * pad)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


def child_baseline(spec: dict) -> dict:
    """The baseline: a plain transformers.Trainer + peft script, batches padded to max length."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from workers.training.tasks import SFTRunner
    from workers.training.text import chat_example, row_messages

    device = _device()
    hp = hyperparameters(epochs=spec["epochs"])
    train_rows, validation_rows = _load_spec_rows(spec)
    folder = spec["model_folder"]
    _seed_everything(hp["seed"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(
        r=hp["lora_rank"], lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"],
        target_modules=["c_attn", "c_proj", "c_fc"], task_type="CAUSAL_LM", fan_in_fan_out=True,
    ))
    train = [e for row in train_rows if (e := chat_example(tokenizer, row_messages(row), max_length=MAX_SEQ_LENGTH))]
    validation = [e for row in validation_rows
                  if (e := chat_example(tokenizer, row_messages(row), max_length=MAX_SEQ_LENGTH))]
    # The same batches in the same order as Lode's trainer: its runner's per-epoch order (a runner
    # is a plain holder of the examples here; it never sees the model).
    order_source = SFTRunner(None, tokenizer, train=train, validation=[], hp=hp, device=device)
    batches = [batch for epoch in range(hp["epochs"]) for batch in order_source.train_batches(epoch)]
    if any(len(batch) != BATCH_SIZE for batch in batches):
        raise BenchError(f"{len(train)} training examples do not fill batches of {BATCH_SIZE}: the sequential"
                         " baseline would straddle epochs")
    features = [{"input_ids": train[i].input_ids, "labels": train[i].labels} for batch in batches for i in batch]
    on_cuda = device.type == "cuda"
    output_dir = tempfile.mkdtemp(prefix="lode-bench-finetune-hf-")
    arguments = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=BATCH_SIZE, num_train_epochs=1,
        learning_rate=hp["learning_rate"], lr_scheduler_type="linear", warmup_steps=0, weight_decay=hp["weight_decay"],
        max_grad_norm=hp["max_grad_norm"], seed=hp["seed"], eval_strategy="no", save_strategy="no", report_to="none",
        logging_strategy="steps", logging_steps=hp["log_every_steps"], disable_tqdm=True,
        train_sampling_strategy="sequential", remove_unused_columns=False, dataloader_num_workers=0,
        dataloader_pin_memory=on_cuda, use_cpu=not on_cuda, bf16=on_cuda and torch.cuda.is_bf16_supported(),
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=features,
                      data_collator=_PadToMax(tokenizer.pad_token_id, MAX_SEQ_LENGTH))
    val_loss_before = validation_loss(model, validation, pad_id=tokenizer.pad_token_id, device=device)
    rss_before = _rss_bytes()
    _memory_start(device)
    began = time.perf_counter()
    output = trainer.train()
    if on_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    memory = _memory_peak(device, rss_before)
    val_loss = validation_loss(trainer.model, validation, pad_id=tokenizer.pad_token_id, device=device)
    tokens = sum(len(feature["input_ids"]) for feature in features)
    import shutil

    shutil.rmtree(output_dir, ignore_errors=True)
    return {
        "side": "baseline", "seconds": seconds, "tokens": tokens, "padded_tokens": len(features) * MAX_SEQ_LENGTH,
        "steps": int(output.global_step), "val_loss": val_loss, "val_loss_before": val_loss_before,
        "train_examples": len(train),
        "validation_examples": len(validation), "examples_digest": examples_digest(train + validation),
        "batches_digest": batches_digest(batches),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in model.parameters()), "last_train_loss": float(output.training_loss),
        "device": str(device), **memory,
    }


def child_mfu(spec: dict) -> dict:
    """Lode's trainer on a ~0.5B-parameter Llama config (random weights, no download), full
    fine-tune in bf16 autocast, packed variable-length batches; MFU over the steps after warm-up."""
    import random

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lode.training.hyperparameters import hyperparameters_validate
    from workers.training import loop
    from workers.training.tasks import SFTRunner
    from workers.training.text import IGNORE, Example

    device = torch.device("cuda")
    config = LlamaConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                         num_key_value_heads=16, vocab_size=32000, max_position_embeddings=2048,
                         tie_word_embeddings=False)
    _seed_everything(SEED)
    model = LlamaForCausalLM(config).to(device)
    model.config.use_cache = False
    parameters = sum(p.numel() for p in model.parameters())
    matmul_parameters = parameters - model.get_input_embeddings().weight.numel()  # a lookup, not a matmul
    rng = random.Random(SEED)
    max_length, batch_size, steps, warmup = spec["max_length"], spec["batch_size"], spec["steps"], spec["warmup_steps"]
    examples = []
    for _ in range(batch_size * steps):
        length = rng.randint(max_length // 8, max_length)
        ids = [rng.randrange(3, config.vocab_size) for _ in range(length)]
        cut = length // 4
        examples.append(Example(input_ids=ids, labels=[IGNORE] * cut + ids[cut:]))
    hp = hyperparameters_validate("sft", "full", {
        "epochs": 1, "batch_size": batch_size, "max_seq_length": max_length, "mixed_precision": "bf16",
        "seed": SEED % 2**31, "warmup_ratio": 0.0, "eval_every_steps": 10_000_000, "checkpoint_every_steps": 10_000_000,
        "log_every_steps": 10,
    })

    class _Tokenizer:
        pad_token_id = 0
        eos_token_id = 0

    runner = SFTRunner(model, _Tokenizer(), train=examples, validation=[], hp=hp, device=device)
    step_tokens: list[int] = []
    step_attention: list[int] = []  # sum of len^2 over the step's examples
    train_loss = runner.train_loss

    def counted(batch):
        step_tokens.append(sum(len(examples[i].input_ids) for i in batch))
        step_attention.append(sum(len(examples[i].input_ids) ** 2 for i in batch))
        return train_loss(batch)

    runner.train_loss = counted
    hooks = RecordingHooks()
    began = time.perf_counter()
    result = loop.train(runner, hp, hooks)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    times = hooks.step_times  # after each optimizer step (the loop syncs on the loss every batch)
    measured = range(warmup, len(times))
    window = times[-1] - times[warmup - 1]
    tokens = sum(step_tokens[i] for i in measured)
    # PaLM's convention: 6 N per token for the matmul parameters, plus 12 x layers x hidden x the
    # sequence length per token for attention; with packing an example attends within itself only,
    # so its own length is the sequence length.
    flops = 6 * matmul_parameters * tokens + 12 * config.num_hidden_layers * config.hidden_size * sum(
        step_attention[i] for i in measured)
    name = torch.cuda.get_device_name(device)
    peak = spec.get("peak_flops") or next((value for key, value in PEAK_BF16_FLOPS if key in name), None)
    return {
        "device_name": name, "parameters": parameters, "matmul_parameters": matmul_parameters, "steps": result.steps,
        "measured_steps": len(measured), "tokens": tokens, "window_s": window, "seconds": seconds,
        "tokens_per_s": tokens / window, "flops_per_s": flops / window, "peak_flops": peak,
        "mfu": (flops / window / peak) if peak else None, "cuda_peak": int(torch.cuda.max_memory_allocated(device)),
        "mean_example_tokens": sum(step_tokens) / len(examples), "batch_size": batch_size,
    }


CHILDREN = {"lode": child_lode, "baseline": child_baseline, "mfu": child_mfu}


def child_main(mode: str, spec_json: str) -> int:
    import django
    import torch

    spec = json.loads(spec_json)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    django.setup()
    _quiet()
    try:
        result = CHILDREN[mode](spec)
        result["threads"] = torch.get_num_threads()
    except BaseException:
        traceback.print_exc()
        return 1
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


def child_run(mode: str, spec: dict, *, timeout: float) -> dict:
    """Runs one side in a fresh interpreter and returns what it printed."""
    threads = {"OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])} if spec.get("threads") else {}
    return child_result(str(Path(__file__).resolve()), mode, spec, mark=RESULT_MARK, env=child_env(threads),
                        timeout=timeout)


# --- rounds and report -----------------------------------------------------------------------------------


@dataclass
class Run:
    rounds: list[tuple[dict, dict]] = field(default_factory=list)  # (lode, baseline)
    skipped: int = 0
    load_start: float = 0.0


def _rate(side: dict) -> float:
    return side["tokens"] / side["seconds"]


def _mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


def _memory_text(side: dict) -> str:
    if "cuda_peak" in side:
        return f"{_mib(side['cuda_peak'])} CUDA"
    return f"+{_mib(side['rss_increase'])} RSS"


def consistency_check(lode: dict, baseline: dict) -> None:
    problems = []
    if lode["examples_digest"] != baseline["examples_digest"]:
        problems.append("the two sides tokenized different examples")
    if lode["batches_digest"] != baseline["batches_digest"]:
        problems.append("the two sides trained different batches or orders")
    if lode["trainable"] != baseline["trainable"]:
        problems.append(f"trainable parameters differ: Lode {lode['trainable']:,}, baseline {baseline['trainable']:,}")
    if lode["steps"] != baseline["steps"]:
        problems.append(f"steps differ: Lode {lode['steps']}, baseline {baseline['steps']}")
    if lode["tokens"] != baseline["tokens"]:
        problems.append(f"tokens trained differ: Lode {lode['tokens']:,}, baseline {baseline['tokens']:,}")
    if lode["checkpoints"]:
        problems.append(f"Lode's loop took {lode['checkpoints']} checkpoint(s)")
    if problems:
        raise BenchError("the sides are not comparable: " + "; ".join(problems))


def report(state: Run, args: argparse.Namespace, mfu: dict | None, mfu_note: str, total_s: float) -> None:
    med = statistics.median
    lodes = [lode for lode, _ in state.rounds]
    bases = [base for _, base in state.rounds]
    rate, base_rate = med([_rate(s) for s in lodes]), med([_rate(s) for s in bases])
    ratio = rate / base_rate if base_rate > 0 else float("inf")
    val, base_val = med([s["val_loss"] for s in lodes]), med([s["val_loss"] for s in bases])
    first = bases[0]
    padding_share = 1 - first["tokens"] / first["padded_tokens"]
    n = len(state.rounds)
    log("")
    log(f"finetune_throughput: SFT + LoRA on {MODEL_NAME} ({first['total']:,} parameters, {first['trainable']:,}"
        f" trainable), {first['train_examples']:,} training and {first['validation_examples']:,} validation examples,"
        f" {args.epochs} epoch(s), batch {BATCH_SIZE}, learning rate {LEARNING_RATE:g}, device {first['device']};"
        f" {n} round{'s' if n > 1 else ''}, figures are medians of the rounds"
        + (f"; {state.skipped} more round(s) skipped to stay within {QUICK_BUDGET_S:.0f} s" if state.skipped else ""))
    log(f"tokens: {first['tokens']:,} non-padding tokens trained per run ({first['tokens'] / first['steps'] / BATCH_SIZE:.0f}"
        f" a example on average); the baseline pads them to {first['padded_tokens']:,}")
    log(f"this machine has {os.cpu_count()} CPUs; 1-minute load average {state.load_start:.1f} at the start,"
        f" {os.getloadavg()[0]:.1f} at the end" + ("" if first["device"] != "cpu" else "; peak memory is the increase"
                                                    " of the process's peak RSS over its RSS before training"))
    log("")
    log(f"{'side':<42} {'tokens/s':>10} {'padding':>8} {'peak memory':>18} {'val loss':>9} {'steps':>6} {'train s':>8}")
    log(f"{'lode: loop.train, packed (padding-free)':<42} {rate:>10,.0f} {0:>8.0%}"
        f" {_memory_text(max(lodes, key=lambda s: s.get('cuda_peak', s['rss_increase']))):>18} {val:>9.4f}"
        f" {lodes[0]['steps']:>6} {med([s['seconds'] for s in lodes]):>8.2f}")
    log(f"{'baseline: transformers.Trainer, pad to 256':<42} {base_rate:>10,.0f} {padding_share:>8.0%}"
        f" {_memory_text(max(bases, key=lambda s: s.get('cuda_peak', s['rss_increase']))):>18} {base_val:>9.4f}"
        f" {bases[0]['steps']:>6} {med([s['seconds'] for s in bases]):>8.2f}")
    log(f"ratio lode / baseline tokens/s: {ratio:.2f}x (target {TARGET_RATIO}x); validation loss lode {val:.4f} vs baseline"
        f" {base_val:.4f} ({(val / base_val - 1):+.2%}; 'equal or better' allows +{VAL_LOSS_TOLERANCE:.0%} for run-to-run"
        f" noise: dropout draws differ between the sides)")
    log(f"validation loss of the base model before training: {lodes[0]['val_loss_before']:.4f} (Lode's process),"
        f" {bases[0]['val_loss_before']:.4f} (the baseline's)")
    log(f"Lode's own in-loop validation loss (packed batches, block-diagonal attention):"
        f" {med([s['loop_val_loss'] for s in lodes]):.4f}; the padded evaluation above: {val:.4f}"
        f" (they agree when packing keeps the examples apart)")
    if lodes[0]["device"] == "cpu":
        log(f"peak RSS (ru_maxrss) of the processes: Lode {_mib(max(s['rss_peak'] for s in lodes))}, baseline"
            f" {_mib(max(s['rss_peak'] for s in bases))} (before training: {_mib(med([s['rss_before'] for s in lodes]))}"
            f" and {_mib(med([s['rss_before'] for s in bases]))})")
    for i, (lode, base) in enumerate(state.rounds, start=1):
        order = "Lode first" if i % 2 else "baseline first"
        log(f"  round {i} ({order}): lode {_rate(lode):,.0f} tokens/s ({lode['seconds']:.2f} s, +{lode['eval_seconds']:.2f} s"
            f" final eval), val {lode['val_loss']:.4f}, {_memory_text(lode)} | baseline {_rate(base):,.0f} tokens/s"
            f" ({base['seconds']:.2f} s), val {base['val_loss']:.4f}, {_memory_text(base)} | ratio {_rate(lode) / _rate(base):.2f}x")
    log("")
    if mfu is None:
        log(f"MFU (~0.5B Llama, bf16, Lode's trainer): {mfu_note}")
    else:
        mfu_text = f"{mfu['mfu']:.1%}" if mfu["mfu"] is not None else "n/a (unknown peak for this device: --peak-tflops)"
        log(f"MFU: Llama {mfu['parameters'] / 1e6:,.0f}M parameters (hidden 1024, 24 layers, random weights), full"
            f" fine-tune, bf16 autocast, batch {mfu['batch_size']} packed ({mfu['mean_example_tokens']:.0f} tokens an example)"
            f" on {mfu['device_name']}: {mfu['tokens_per_s']:,.0f} tokens/s, {mfu['flops_per_s'] / 1e12:,.1f} TFLOP/s over"
            f" {mfu['measured_steps']} steps after warm-up = MFU {mfu_text} (target ≥{TARGET_MFU:.0%},"
            f" met={'yes' if (mfu['mfu'] or 0) >= TARGET_MFU else 'no'}); CUDA peak {_mib(mfu['cuda_peak'])}")
    log(f"whole run: {total_s:.0f} s")
    met = ratio >= TARGET_RATIO and val <= base_val * (1 + VAL_LOSS_TOLERANCE)
    log(f'BENCH finetune_throughput tokens_per_s={rate:.0f} baseline={base_rate:.0f} ratio={ratio:.2f} '
        f'target="{TARGET_TEXT}" met={"yes" if met else "no"}')


def run(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    args.examples = args.examples or (240 if args.quick else 512)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.epochs = args.epochs or (1 if args.quick else 2)
    if args.examples % BATCH_SIZE:
        raise BenchError(f"--examples must be a multiple of the batch size ({BATCH_SIZE})")
    import django

    django.setup()
    _quiet()
    import torch
    from transformers import AutoTokenizer

    from workers.tiny_models.manifest import folder_is_complete

    folder = model_folder()
    if not folder_is_complete(folder):
        raise BenchError(f"the base model {MODEL_NAME} is not built at {folder}: run `make models` first")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    validation_count = max(BATCH_SIZE, args.examples // 8)
    rows = rows_generate(tokenizer, count=args.examples + validation_count, seed=SEED)
    state = Run(load_start=os.getloadavg()[0])
    with tempfile.TemporaryDirectory(prefix="lode-bench-finetune-") as scratch:
        data_path = os.path.join(scratch, "rows.json")
        with open(data_path, "w") as handle:
            json.dump({"train": rows[:args.examples], "validation": rows[args.examples:]}, handle)
        spec = {"data_path": data_path, "model_folder": str(folder), "epochs": args.epochs, "threads": args.threads}
        log(f"{args.examples:,} training and {validation_count:,} validation instruction pairs (seed {SEED}; prompts"
            f" {PROMPT_WORDS[0]}-{PROMPT_WORDS[1]} words, responses {RESPONSE_WORDS[0]}-{RESPONSE_WORDS[1]}),"
            f" {args.epochs} epoch(s), {args.rounds} round(s), device {'cuda' if torch.cuda.is_available() else 'cpu'},"
            f" {args.threads or 'default'} torch thread(s) a side")
        budget_s = QUICK_BUDGET_S if args.quick else 0.0
        limit = max(600.0, args.examples * args.epochs)
        for index in range(1, args.rounds + 1):
            round_began = time.perf_counter()
            results = {}
            for side in (("lode", "baseline") if index % 2 else ("baseline", "lode")):
                log(f"round {index}: {side} ...")
                results[side] = child_run(side, spec, timeout=limit)
                r = results[side]
                log(f"  {_rate(r):,.0f} tokens/s ({r['tokens']:,} tokens in {r['seconds']:.2f} s, {r['steps']} steps),"
                    f" val loss {r['val_loss']:.4f}, {_memory_text(r)}")
            consistency_check(results["lode"], results["baseline"])
            state.rounds.append((results["lode"], results["baseline"]))
            elapsed, last = time.perf_counter() - began, time.perf_counter() - round_began
            if budget_s and index < args.rounds and elapsed + last > budget_s:
                state.skipped = args.rounds - index
                log(f"  (another round would end past the {budget_s:.0f} s budget: {elapsed:.0f} s so far; the remaining"
                    f" {state.skipped} round(s) are skipped)")
                break
    mfu, mfu_note = None, ""
    if not torch.cuda.is_available():
        mfu_note = "skipped: there is no CUDA device (torch.cuda.is_available() is False); not a failure"
    elif args.skip_mfu:
        mfu_note = "skipped (--skip-mfu)"
    else:
        log("MFU: Lode's trainer on a ~0.5B-parameter Llama config (random weights), bf16 ...")
        mfu_spec = {"max_length": 1024, "batch_size": 8, "steps": 20 if args.quick else 60, "warmup_steps": 5,
                    "peak_flops": args.peak_tflops * 1e12 if args.peak_tflops else None}
        mfu = child_run("mfu", mfu_spec, timeout=600.0)
    report(state, args, mfu, mfu_note, time.perf_counter() - began)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        return child_main(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="240 examples, 1 epoch, 2 rounds (none started that would end past 110 s)")
    parser.add_argument("--examples", type=int, default=None, help="training examples (default 512; --quick 240)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default 2; --quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick 2); figures are medians")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads of each side's process (default 1: see the module's docstring);"
                             " 0 = torch's default (one per core)")
    parser.add_argument("--skip-mfu", action="store_true", help="on CUDA: skip the ~0.5B MFU measurement")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak dense bf16 TFLOP/s for MFU (default: known from its name)")
    args = parser.parse_args()
    if any(value is not None and value < 1 for value in (args.examples, args.epochs, args.rounds)):
        parser.error("--examples, --epochs and --rounds must be positive")
    if args.threads < 0:
        parser.error("--threads must be 0 (torch's default) or positive")
    return run_cli("finetune_throughput", run, args)


if __name__ == "__main__":
    sys.exit(main())
