"""The `training.finetune` job handler, run by a worker on the gpu queue (on CPU when the machine
has no CUDA device: same code path). It loads the base model and the dataset versions, builds the
task's runner, trains with the shared loop (checkpoints to the store, events and progress to the
job), then stores and registers the fine-tuned model with its card.

Resuming: the job's checkpoint names the last stored training checkpoint; a new attempt (after a
worker died) loads it and continues from its step, data position and RNG state."""
from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lode.core import artifacts

from . import loop
from .text import chat_example, classification_texts, prompt_text, row_messages

logger = logging.getLogger(__name__)


def device_for_training() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def version_rows(tenant_id, version_id: str) -> list[dict[str, Any]]:
    from lode.datasets.selectors import version_get
    from lode.datasets.shards import shard_tables

    version = version_get(tenant_id=tenant_id, version_id=version_id)
    rows: list[dict[str, Any]] = []
    for table in shard_tables(tenant_id=tenant_id, prefix=version.prefix, shard_count=version.shard_count):
        rows.extend(table.to_pylist())
    return rows


def split_rows(rows: list, *, fraction: float, seed: int) -> tuple[list, list]:
    """Training and validation rows: a seeded shuffle, the validation share off the end (at least
    one row each when there are two or more rows and the fraction is not zero)."""
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = min(max(int(round(len(rows) * fraction)), 1), len(rows) - 1)
    return [rows[i] for i in order[held:]], [rows[i] for i in order[:held]]


class JobHooks:
    """The loop's hooks onto the job: events, progress, cancel checks and checkpoints in the store."""

    def __init__(self, ctx):
        self.ctx = ctx

    def metrics(self, values: dict[str, Any]) -> None:
        self.ctx.metric(f"step {values['step']}", kind="train", **_json_safe(values))

    def evaluation(self, values: dict[str, Any]) -> None:
        self.ctx.metric(f"eval at step {values['step']}", kind="eval", **_json_safe(values))

    def checkpoint(self, step: int, data: bytes, summary: dict[str, Any]) -> None:
        from lode.training.services import checkpoint_record

        key = f"fine-tunes/{self.ctx.job_id}/checkpoints/step-{step:07d}.pt"
        artifacts.object_put(tenant_id=self.ctx.tenant_id, key=key, data=data, content_type="application/octet-stream")
        checkpoint_record(tenant_id=self.ctx.tenant_id, job_id=self.ctx.job_id, step=step, key=key, size_bytes=len(data),
                          summary=_json_safe(summary))
        # Committed with the job's resume state (and the compute since the last checkpoint).
        self.ctx.save_checkpoint({"step": step, "key": key})

    def progress(self, fraction: float, message: str) -> None:
        self.ctx.progress(fraction, message)

    def check_cancelled(self) -> None:
        self.ctx.check_cancelled(every_seconds=1.0)


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    safe = {}
    for key, value in values.items():
        if isinstance(value, float):
            safe[key] = round(value, 6) if value == value and abs(value) != float("inf") else None
        elif isinstance(value, (int, str, bool)) or value is None:
            safe[key] = value
        else:
            safe[key] = str(value)
    return safe


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def finetune_run(ctx, params: dict[str, Any]) -> dict[str, Any]:
    from lode.training.selectors import base_model_get
    from workers.model_store import materialize_base_model

    hp = params["hyperparameters"]
    task, method = params["task"], params["method"]
    device = device_for_training()
    started = time.monotonic()
    ctx.progress(0.0, "loading the base model and the data", force=True)
    base = base_model_get(name=params["base_model"], tenant_id=ctx.tenant_id)
    folder = materialize_base_model(base.name, tenant_id=ctx.tenant_id)
    _seed_everything(hp["seed"])

    train_rows = version_rows(ctx.tenant_id, params["train_version_id"])
    if params.get("validation_version_id"):
        validation_rows = version_rows(ctx.tenant_id, params["validation_version_id"])
    else:
        train_rows, validation_rows = split_rows(train_rows, fraction=hp["validation_fraction"], seed=hp["seed"])

    resume, resume_bytes = None, None
    if ctx.checkpoint.get("key"):
        resume_bytes = artifacts.object_get(tenant_id=ctx.tenant_id, key=ctx.checkpoint["key"])
        resume = loop.checkpoint_load(resume_bytes)
        ctx.log("resuming from the last checkpoint", step=resume["step"], key=ctx.checkpoint["key"])
    gpus = params.get("gpus", 1)
    ctx.compute_units = gpus  # GPU-seconds: wall time on each of the job's devices

    if task == "text_to_image":
        from .text_to_image import text_to_image_train

        return text_to_image_train(ctx, params, base=base, folder=folder, train_rows=train_rows,
                                   validation_rows=validation_rows, device=device, resume=resume, started=started)

    built = build_text_runner(task=task, method=method, folder=folder, hp=hp, device=device, train_rows=train_rows,
                              validation_rows=validation_rows)
    runner = built.runner
    ctx.log("training", task=task, method=method, device=str(device), train_examples=built.train_count,
            validation_examples=built.validation_count, trainable_parameters=built.trainable, parameters=built.total)
    hooks = JobHooks(ctx)
    placement: dict[str, Any] = {"world_size": 1}
    if gpus > 1:
        result, placement = _train_distributed(built, hp=hp, hooks=hooks, resume=resume, resume_bytes=resume_bytes,
                                               gpus=gpus, device=device, spec={
                                                   "task": task, "method": method, "folder": str(folder),
                                                   "hyperparameters": hp, "train_rows": train_rows,
                                                   "validation_rows": validation_rows, "device": device.type})
        ctx.log("trained on several processes", **placement)
    else:
        result = loop.train(runner, hp, hooks, resume=resume)
    final_eval = next((entry for entry in reversed(result.history) if entry.get("kind") == "eval"), {})
    metrics = {key: value for key, value in final_eval.items() if key not in ("kind",)}
    metrics.update({"steps": result.steps, "tokens": result.tokens, "train_seconds": round(result.seconds, 3),
                    "stopped_early": result.stopped_early, "best_val_loss": result.best_val_loss})
    samples: list[dict[str, str]] = []
    if task == "sft" and hp.get("generation_eval_samples"):
        ctx.progress(0.96, "generating a held-out sample for BLEU and chrF", force=True)
        generation, samples = generation_metrics(runner.model, built.tokenizer, validation_rows,
                                                 count=hp["generation_eval_samples"], device=device)
        metrics.update(generation)
        ctx.metric("generation eval", kind="eval", **_json_safe(generation))
    ctx.progress(0.98, "saving and registering the model", force=True)
    model = _register(ctx, params, base=base, built=built, metrics=metrics, samples=samples,
                      train_rows=len(train_rows), validation_rows=len(validation_rows))
    return {"model_id": str(model.id), "model": model.name, "steps": result.steps, "metrics": _json_safe(metrics),
            "resumed_from_step": result.resumed_from_step, "seconds": round(time.monotonic() - started, 3), **placement}


def _train_distributed(built, *, hp, hooks, resume, resume_bytes, gpus: int, device: torch.device, spec: dict):
    """Rank 0 here, ranks 1..gpus-1 launched beside it (workers.training.distributed)."""
    import torch.distributed as dist

    from . import distributed

    launched = distributed.launch(world_size=gpus, device=device, spec=spec, resume_bytes=resume_bytes)
    runner = built.runner
    try:
        distributed.init_group(rank=0, world_size=gpus, port=launched.port, device=device)
        try:
            runner.model = distributed.wrap(runner.model, device)
            result = loop.train(runner, hp, hooks, resume=resume,
                                distributed=loop.Distributed(rank=0, world_size=gpus))
        finally:
            runner.model = runner.module
            dist.destroy_process_group()
        placement = launched.finish(own_digest=result.last_digest)
    except BaseException:
        launched.abort()
        raise
    return result, placement


class BuiltRunner:
    def __init__(self, runner, tokenizer, *, train_count: int, validation_count: int, labels: list[str] | None = None):
        self.runner = runner
        self.tokenizer = tokenizer
        self.train_count = train_count
        self.validation_count = validation_count
        self.labels = labels or []
        self.total = sum(parameter.numel() for parameter in runner.model.parameters())
        self.trainable = sum(parameter.numel() for parameter in runner.model.parameters() if parameter.requires_grad)


def _lora_wrap(model, *, hp: dict[str, Any], task_type: str):
    from peft import LoraConfig, get_peft_model

    from lode.training.hyperparameters import lora_targets_for

    targets = hp.get("lora_target_modules") or lora_targets_for(model.config.model_type)
    config = LoraConfig(r=hp["lora_rank"], lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"],
                        target_modules=targets, task_type=task_type,
                        fan_in_fan_out=model.config.model_type == "gpt2")
    return get_peft_model(model, config)


def build_text_runner(*, task: str, method: str, folder: Path, hp: dict[str, Any], device: torch.device,
                      train_rows: list[dict], validation_rows: list[dict]) -> BuiltRunner:
    """The model (with a LoRA adapter or fully trainable) and the task's runner over the rows."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from .tasks import ClassificationRunner, DPORunner, SFTRunner

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if task == "classification":
        train = classification_texts(train_rows)
        validation = classification_texts(validation_rows)
        label_names = sorted({label for labels in train[1] for label in labels})
        if len(label_names) < 2:
            raise ValueError("classification needs at least two labels in the training data")
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)}, ignore_mismatched_sizes=True,
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        if any(len(labels) != 1 for labels in train[1]):
            model.config.problem_type = "multi_label_classification"
        model = _prepare(model, method=method, hp=hp, device=device, peft_task="SEQ_CLS")
        runner = ClassificationRunner(model, tokenizer, train=train, validation=validation, label_names=label_names,
                                      hp=hp, device=device)
        return BuiltRunner(runner, tokenizer, train_count=len(runner.train), validation_count=len(runner.validation),
                           labels=label_names)
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.config.use_cache = False
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model = _prepare(model, method=method, hp=hp, device=device, peft_task="CAUSAL_LM")
    limit = min(hp["max_seq_length"], getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 10**9))
    if task == "sft":
        train = [example for row in train_rows if (example := chat_example(tokenizer, row_messages(row), max_length=limit))]
        validation = [example for row in validation_rows if (example := chat_example(tokenizer, row_messages(row), max_length=limit))]
        runner = SFTRunner(model, tokenizer, train=train, validation=validation, hp=hp, device=device)
        return BuiltRunner(runner, tokenizer, train_count=len(train), validation_count=len(validation))
    # dpo
    def pairs(rows: list[dict]) -> list:
        made = []
        for row in rows:
            chosen = chat_example(tokenizer, [{"role": "user", "content": row["prompt"]},
                                              {"role": "assistant", "content": row["chosen"]}], max_length=limit)
            rejected = chat_example(tokenizer, [{"role": "user", "content": row["prompt"]},
                                                {"role": "assistant", "content": row["rejected"]}], max_length=limit)
            if chosen and rejected:
                made.append((chosen, rejected))
        return made

    train_pairs, validation_pairs = pairs(train_rows), pairs(validation_rows)
    runner = DPORunner(model, tokenizer, train=train_pairs, validation=validation_pairs, hp=hp, device=device)
    return BuiltRunner(runner, tokenizer, train_count=len(train_pairs), validation_count=len(validation_pairs))


def _prepare(model, *, method: str, hp: dict[str, Any], device: torch.device, peft_task: str):
    if hp.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
        if method == "lora":
            model.enable_input_require_grads()
    if method == "lora":
        model = _lora_wrap(model, hp=hp, task_type=peft_task)
    return model.to(device)


def generation_metrics(model, tokenizer, rows: list[dict], *, count: int, device: torch.device,
                       max_new_tokens: int = 48) -> tuple[dict[str, float], list[dict[str, str]]]:
    """BLEU and chrF (sacrebleu) of greedy generations against the references of up to `count`
    held-out rows; and the first few generations, for the model card."""
    import sacrebleu

    sample = [row for row in rows if row.get("response")][:count]
    if not sample:
        return {}, []
    model.eval()
    outputs = []
    with torch.no_grad():
        for row in sample:
            messages = row_messages({**row, "response": None})
            encoded = tokenizer(prompt_text(tokenizer, messages), return_tensors="pt", add_special_tokens=False).to(device)
            generated = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id)
            outputs.append(tokenizer.decode(generated[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    references = [row["response"] for row in sample]
    bleu = sacrebleu.corpus_bleu(outputs, [references])
    chrf = sacrebleu.corpus_chrf(outputs, [references])
    examples = [{"prompt": row["prompt"], "reference": row["response"], "generated": output}
                for row, output in zip(sample[:3], outputs[:3])]
    return {"bleu": round(bleu.score, 3), "chrf": round(chrf.score, 3), "generation_samples": len(sample)}, examples


def _register(ctx, params: dict[str, Any], *, base, built: BuiltRunner, metrics: dict[str, Any],
              samples: list[dict[str, str]], train_rows: int, validation_rows: int):
    from lode.training.model_card import model_card_render
    from lode.training.selectors import finetune_model
    from lode.training.services import tuned_model_register

    existing = finetune_model(tenant_id=ctx.tenant_id, job_id=ctx.job_id)
    if existing is not None:
        return existing
    hp = params["hyperparameters"]
    model = built.runner.model
    model_id = uuid.uuid4()
    merged = params["method"] == "lora" and bool(hp.get("merge_adapter"))
    folder = Path(tempfile.mkdtemp(prefix="lode-model-"))
    try:
        if merged:
            model = model.merge_and_unload()
        model.save_pretrained(folder)
        built.tokenizer.save_pretrained(folder)
        name = _model_name(base.name, params, model_id)
        fields = {
            "name": name, "base_model": base, "task": params["task"], "task_type": base.task_type,
            "method": params["method"], "architecture": base.architecture, "parameter_count": built.total,
            "trainable_parameter_count": built.trainable, "is_adapter": params["method"] == "lora" and not merged,
            "merged": merged, "train_version_id": params["train_version_id"],
            "validation_version_id": params.get("validation_version_id"), "hyperparameters": hp,
            "metrics": _json_safe(metrics), "labels": built.labels,
        }
        fields["model_card"] = model_card_render(
            tenant_id=ctx.tenant_id, fields=fields, base=base, params=params, samples=samples,
            train_rows=train_rows, validation_rows=validation_rows,
        )
        return tuned_model_register(tenant_id=ctx.tenant_id, job_id=ctx.job_id, model_id=model_id, local_dir=folder,
                                    fields=fields)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _model_name(base_name: str, params: dict[str, Any], model_id: uuid.UUID) -> str:
    suffix = params.get("suffix") or params["task"].replace("_", "-")
    return f"ft-{base_name}-{suffix}-{model_id.hex[:8]}"[:150]
