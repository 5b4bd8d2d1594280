"""`tiny-gpt2`: a GPT-2 small enough to pre-train on two CPU threads in well under a minute.

A randomly initialised base learns little from a short fine-tune, so the builder pre-trains it on
the shipped corpus first: fine-tunes then show real loss drops and generations are recognisable
(customer-service replies, product copy). The loss is measured on fixed windows of the corpus
before and after pre-training and kept in the manifest."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from workers.tiny_models import TASK_CAUSAL_LM, TINY_GPT2
from workers.tiny_models.manifest import BuiltModel, manifest_write
from workers.tiny_models.text import corpus_documents, corpus_sha256, corpus_size_bytes
from workers.tiny_models.tokenizer import MODEL_MAX_LENGTH, build_tokenizer

# ~350 steps of 16x128 tokens take about 25 s on 2 threads and bring the loss from ~6.9 to ~2.7.
DEFAULT_PRETRAIN_STEPS = 350
# What tests use: a few seconds, and the loss falls by about a third (6.9 -> 4.6).
QUICK_PRETRAIN_STEPS = 120
DEFAULT_LEARNING_RATE = 6e-3
BATCH_SIZE = 16
BLOCK_SIZE = 128
EVAL_WINDOWS = 16

StepCallback = Callable[[int, int, float], None]


def gpt2_config(*, tokenizer: PreTrainedTokenizerFast) -> GPT2Config:
    """The tiny GPT-2 shape (~180k parameters), shared with the classifier so weights carry over."""
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=MODEL_MAX_LENGTH,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def corpus_token_stream(*, tokenizer: PreTrainedTokenizerFast, documents: list[str] | None = None) -> torch.Tensor:
    """The corpus as one stream of token ids, each document followed by eos (GPT-2 style packing)."""
    ids: list[int] = []
    for document in documents if documents is not None else corpus_documents():
        ids.extend(tokenizer(document, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def _lr_factor(step: int, total: int) -> float:
    # Linear warm-up over the first tenth, then cosine decay to a tenth of the peak.
    warmup = max(1, total // 10)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def pretrain(
    *,
    model: GPT2LMHeadModel,
    stream: torch.Tensor,
    steps: int,
    seed: int,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    block_size: int = BLOCK_SIZE,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Trains `model` in place on random windows of `stream`; returns the training record."""
    if len(stream) <= block_size + 1:
        raise ValueError(f"The corpus has {len(stream)} tokens, fewer than one {block_size}-token window.")
    # Evenly spaced windows, the same before and after training, so the two losses compare.
    last_start = len(stream) - block_size - 1
    eval_batch = torch.stack(
        [stream[i : i + block_size] for i in torch.linspace(0, last_start, EVAL_WINDOWS).long().tolist()]
    )

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = model(input_ids=eval_batch, labels=eval_batch).loss.item()
        model.train()
        return loss

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, steps))
    loss_start = eval_loss()
    curve: list[list[float]] = []
    every = max(1, steps // 20)
    window_losses: list[float] = []
    started = time.monotonic()
    model.train()
    for step in range(steps):
        starts = torch.randint(0, last_start + 1, (batch_size,), generator=generator).tolist()
        batch = torch.stack([stream[i : i + block_size] for i in starts])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        value = loss.item()
        window_losses.append(value)
        if (step + 1) % every == 0 or step + 1 == steps:
            curve.append([step + 1, round(sum(window_losses) / len(window_losses), 4)])
            window_losses = []
        if on_step is not None:
            on_step(step + 1, steps, value)
    model.eval()
    return {
        "steps": steps,
        "batch_size": batch_size,
        "block_size": block_size,
        "learning_rate": learning_rate,
        "corpus_tokens": int(len(stream)),
        "corpus_bytes": corpus_size_bytes(),
        "loss_start": round(loss_start, 4),
        "loss_end": round(eval_loss(), 4),
        "loss_curve": curve,
        "seconds": round(time.monotonic() - started, 2),
    }


def causal_lm_recipe(*, seed: int, steps: int, learning_rate: float) -> dict[str, Any]:
    """What determines the build: a cached folder with a different recipe is rebuilt."""
    return {
        "seed": seed,
        "steps": steps,
        "learning_rate": learning_rate,
        "batch_size": BATCH_SIZE,
        "block_size": BLOCK_SIZE,
        "corpus_sha256": corpus_sha256(),
    }


def build_causal_lm(
    *,
    output_dir: Path,
    name: str = TINY_GPT2,
    seed: int = 0,
    steps: int = DEFAULT_PRETRAIN_STEPS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    on_step: StepCallback | None = None,
) -> BuiltModel:
    """Trains the tokenizer, pre-trains the tiny GPT-2 for `steps` steps and saves both (plus the
    manifest) into `output_dir` in Hugging Face format."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(output_dir=output_dir)
    # fork_rng: the seed fixes this build's weights and dropout without moving the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(gpt2_config(tokenizer=tokenizer))
        training = pretrain(
            model=model,
            stream=corpus_token_stream(tokenizer=tokenizer),
            steps=steps,
            seed=seed,
            learning_rate=learning_rate,
            on_step=on_step,
        )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(str(output_dir))
    manifest = manifest_write(
        folder=output_dir,
        name=name,
        task_type=TASK_CAUSAL_LM,
        architecture=type(model).__name__,
        parameter_count=sum(p.numel() for p in model.parameters()),
        extra={
            "recipe": causal_lm_recipe(seed=seed, steps=steps, learning_rate=learning_rate),
            "vocab_size": len(tokenizer),
            "context_length": MODEL_MAX_LENGTH,
            "training": training,
        },
    )
    return BuiltModel(name=name, folder=output_dir, manifest=manifest)
