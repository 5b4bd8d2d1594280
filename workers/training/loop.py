"""The training loop every fine-tune task shares: optimizer, schedule with warm-up, gradient
accumulation, mixed precision, periodic metrics, evaluation with early stopping, checkpoints that
hold everything needed to continue exactly (trainable weights, optimizer, scheduler, RNG states,
data position), and cancellation between steps.

Plain torch: no Django, no S3. The task (a `TaskRunner`) says what a batch and a loss are; the
caller's `Hooks` store checkpoints and report progress."""
from __future__ import annotations

import io
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch


class TaskRunner(Protocol):
    """What the loop needs from a task (SFT, classification, DPO, text-to-image)."""

    device: torch.device

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters."""

    def train_batches(self, epoch: int) -> list[Any]:
        """The epoch's batches, in an order fixed by the seed and the epoch."""

    def train_loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        """The batch's mean loss and the number of tokens (or examples) it trained on."""

    def evaluate(self) -> dict[str, float]:
        """Validation metrics; `val_loss` among them when there is validation data."""

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The weights that training changes (a LoRA adapter, or the whole model)."""

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None: ...

    def train_mode(self, training: bool) -> None: ...


class Hooks(Protocol):
    def metrics(self, values: dict[str, Any]) -> None: ...

    def evaluation(self, values: dict[str, Any]) -> None: ...

    def checkpoint(self, step: int, data: bytes, summary: dict[str, Any]) -> None: ...

    def progress(self, fraction: float, message: str) -> None: ...

    def check_cancelled(self) -> None: ...


class Distributed:
    """This process's place in a torch.distributed group (one process per device). Rank 0 owns the
    hooks (events, checkpoints, cancel checks); the others train their share of each step's batches
    and follow rank 0's decisions (stop early, cancelled) through all-reduces."""

    def __init__(self, *, rank: int, world_size: int):
        self.rank = rank
        self.world_size = world_size

    def any(self, flag: bool) -> bool:
        import torch.distributed as dist

        value = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def total(self, number: float) -> float:
        import torch.distributed as dist

        value = torch.tensor([float(number)], dtype=torch.float64)
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return float(value.item())


class _Stop(Exception):
    """Rank 0 was cancelled: every rank leaves the loop."""


@dataclass
class LoopResult:
    steps: int
    epochs_completed: int
    tokens: int
    best_val_loss: float | None
    stopped_early: bool
    resumed_from_step: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    last_digest: str | None = None  # of the last step's weights, to compare ranks


def autocast_dtype(device: torch.device, mixed_precision: str) -> torch.dtype | None:
    """bf16 on a CUDA device that has it (fp16 otherwise) for "auto"; nothing on CPU."""
    if mixed_precision == "no" or device.type != "cuda":
        return None
    if mixed_precision == "fp16":
        return torch.float16
    if mixed_precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        progress = min(max(progress, 0.0), 1.0)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(1.0 - progress, 0.0)

    return factor


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _rng_restore(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """A digest of trainable weights, to check every rank ends with the same ones."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def checkpoint_load(data: bytes) -> dict[str, Any]:
    # Our own checkpoints hold numpy RNG state and plain containers besides tensors.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def _clone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def train(runner: TaskRunner, hp: dict[str, Any], hooks: Hooks, *, resume: dict[str, Any] | None = None,
          distributed: Distributed | None = None) -> LoopResult:
    """Runs the fine-tune to its last step (or early stop) and leaves the best weights loaded
    (the best validation loss when there is validation data, else the last).

    With `distributed`, each optimizer step takes gradient_accumulation_steps x world_size batches
    (the epoch's last step wraps around to its first batches to fill up) and each rank trains on
    every world_size-th of them; DistributedDataParallel averages the gradients."""
    device = runner.device
    rank, world = (distributed.rank, distributed.world_size) if distributed is not None else (0, 1)
    lead = rank == 0
    started = time.monotonic()
    epochs = hp["epochs"]
    accumulation = hp["gradient_accumulation_steps"]
    batches_per_epoch = len(runner.train_batches(0))
    if batches_per_epoch == 0:
        raise ValueError("no training batches: the dataset has no usable rows")
    per_step = accumulation * world
    steps_per_epoch = math.ceil(batches_per_epoch / per_step)
    total_steps = steps_per_epoch * epochs
    if hp.get("max_steps"):
        total_steps = min(total_steps, hp["max_steps"])
    warmup_steps = int(round(hp["warmup_ratio"] * total_steps))

    parameters = [parameter for parameter in runner.parameters() if parameter.requires_grad]
    optimizer_options: dict[str, Any] = {"lr": hp["learning_rate"], "weight_decay": hp["weight_decay"]}
    if device.type == "cuda":
        optimizer_options["fused"] = True
    optimizer = torch.optim.AdamW(parameters, **optimizer_options)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(hp["lr_scheduler"], warmup_steps, total_steps))
    dtype = autocast_dtype(device, hp["mixed_precision"])
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    step, epoch, batch_index, tokens = 0, 0, 0, 0
    best_val: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    bad_evals = 0
    history: list[dict[str, Any]] = []
    resumed_from = None
    elapsed_before = 0.0
    if resume is not None:
        runner.load_trainable_state(resume["trainable"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        _rng_restore(resume["rng"])
        step, epoch, batch_index = resume["step"], resume["epoch"], resume["batch_index"]
        tokens, best_val, bad_evals = resume["tokens"], resume["best_val_loss"], resume["bad_evals"]
        best_state = resume.get("best_state")
        history = list(resume.get("history", []))
        elapsed_before = float(resume.get("elapsed", 0.0))
        resumed_from = step

    def save(reason: str) -> None:
        state = {
            "step": step, "epoch": epoch, "batch_index": batch_index, "tokens": tokens,
            "best_val_loss": best_val, "bad_evals": bad_evals, "history": history[-200:],
            "trainable": _clone_state(runner.trainable_state()), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_state(), "best_state": best_state, "elapsed": elapsed_before + time.monotonic() - started,
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        hooks.checkpoint(step, buffer.getvalue(), {"epoch": epoch, "batch_index": batch_index, "tokens": tokens,
                                                    "best_val_loss": best_val, "reason": reason})

    def evaluate() -> bool:
        """Evaluates (rank 0); True when early stopping says to stop (on every rank)."""
        stop = lead and _evaluate()
        return distributed.any(stop) if distributed is not None else stop

    def _evaluate() -> bool:
        nonlocal best_val, best_state, bad_evals
        runner.train_mode(False)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            values = runner.evaluate()
        runner.train_mode(True)
        values = {"step": step, "epoch": epoch, **values}
        history.append({"kind": "eval", **values})
        hooks.evaluation(values)
        val = values.get("val_loss")
        if val is None:
            return False
        if best_val is None or val < best_val - 1e-6:
            best_val, bad_evals = val, 0
            best_state = _clone_state(runner.trainable_state())
            return False
        bad_evals += 1
        return bool(hp["early_stopping_patience"]) and bad_evals >= hp["early_stopping_patience"]

    if resume is None and hp.get("eval_at_start", True):
        evaluate()  # the starting point of the eval curve: the base model on the validation data
    runner.train_mode(True)
    stopped_early = False
    window_tokens, window_loss, window_batches, window_started = 0, 0.0, 0, time.monotonic()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    optimizer.zero_grad(set_to_none=True)
    while step < total_steps and epoch < epochs and not stopped_early:
        batches = runner.train_batches(epoch)
        while batch_index < len(batches) and step < total_steps:
            group = batches[batch_index:batch_index + per_step]
            taken = len(group)
            if world > 1 and len(group) < per_step:
                group = group + (batches * per_step)[:per_step - len(group)]
            local = group[rank::world]
            for batch in local:
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss, count = runner.train_loss(batch)
                scaled = loss / len(local)
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
                window_loss += float(loss.detach())
                window_batches += 1
                window_tokens += count
                tokens += count
            if scaler is not None:
                scaler.unscale_(optimizer)
            grad_norm = None
            if hp["max_grad_norm"]:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, hp["max_grad_norm"]))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            batch_index += taken
            step += 1

            if step % hp["log_every_steps"] == 0 or step == total_steps:
                now = time.monotonic()
                if distributed is not None:
                    window_tokens = int(distributed.total(window_tokens))
                values = {
                    "step": step, "epoch": epoch + batch_index / len(batches), "loss": window_loss / max(window_batches, 1),
                    "learning_rate": scheduler.get_last_lr()[0], "tokens_per_second": window_tokens / max(now - window_started, 1e-9),
                    "grad_norm": grad_norm,
                }
                if device.type == "cuda":
                    values["gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
                history.append({"kind": "train", **values})
                if lead:
                    hooks.metrics(values)
                window_tokens, window_loss, window_batches, window_started = 0, 0.0, 0, now
            if step % hp["eval_every_steps"] == 0 and step < total_steps:
                stopped_early = evaluate()
            if lead and step % hp["checkpoint_every_steps"] == 0 and step < total_steps and not stopped_early:
                save("every_steps")
            spent = elapsed_before + time.monotonic() - started
            done_steps = step - (resumed_from or 0)
            rate = (time.monotonic() - started) / max(done_steps, 1)
            eta = rate * (total_steps - step)
            cancelled: BaseException | None = None
            if lead:
                hooks.progress(step / total_steps * 0.95, f"step {step}/{total_steps}, ETA {eta:.0f} s, ran {spent:.0f} s")
                try:
                    hooks.check_cancelled()
                except Exception as exc:  # the job's cancel: every rank stops, then rank 0 raises it
                    cancelled = exc
            if distributed is not None and distributed.any(cancelled is not None) and cancelled is None:
                raise _Stop()
            if cancelled is not None:
                raise cancelled
            if stopped_early:
                break
        if batch_index >= len(batches):
            epoch += 1
            batch_index = 0
    if not stopped_early:
        evaluate()
    last_digest = state_digest(runner.trainable_state()) if distributed is not None else None
    if best_state is not None:
        runner.load_trainable_state(best_state)
    return LoopResult(
        last_digest=last_digest,
        steps=step, epochs_completed=epoch, tokens=tokens, best_val_loss=best_val, stopped_early=stopped_early,
        resumed_from_step=resumed_from, history=history, seconds=elapsed_before + time.monotonic() - started,
    )
