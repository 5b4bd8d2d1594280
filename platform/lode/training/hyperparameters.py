"""Fine-tune tasks, methods and hyperparameters: what a request may ask for, checked up front.

Plain Python (no Django, no torch): the API validates with it before a job is written, and the
worker reads the same defaults. Every error is a ValidationFailed naming the field
(`hyperparameters.<key>`, `task`, `method`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lode.core.errors import ValidationFailed

# task -> (the base model task type it needs, the dataset modalities it trains on)
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sft": ("causal_lm", ("instruction", "chat")),
    "classification": ("sequence_classification", ("classification",)),
    "dpo": ("causal_lm", ("preference",)),
    "text_to_image": ("text_to_image", ("image_caption",)),
}
METHODS = ("lora", "full")
NULLABLE = frozenset({"max_steps", "lora_target_modules"})
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp16", "no")

# LoRA target modules per architecture family (attention and MLP projections).
LORA_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "unet": ["to_q", "to_k", "to_v", "to_out.0"],
}


@dataclass(frozen=True)
class Spec:
    kind: type | tuple[type, ...]
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    tasks: tuple[str, ...] | None = None  # None: every task
    methods: tuple[str, ...] | None = None


SPECS: dict[str, Spec] = {
    "epochs": Spec(int, 1, 100),
    "batch_size": Spec(int, 1, 1024),
    "gradient_accumulation_steps": Spec(int, 1, 1024),
    "learning_rate": Spec(float, 1e-8, 1.0),
    "lr_scheduler": Spec(str, choices=SCHEDULES),
    "warmup_ratio": Spec(float, 0.0, 0.5),
    "weight_decay": Spec(float, 0.0, 1.0),
    "max_seq_length": Spec(int, 8, 131072),
    "seed": Spec(int, 0, 2**31 - 1),
    "max_steps": Spec(int, 1, 10_000_000),
    "eval_every_steps": Spec(int, 1, 10_000_000),
    "checkpoint_every_steps": Spec(int, 1, 10_000_000),
    "log_every_steps": Spec(int, 1, 10_000_000),
    "early_stopping_patience": Spec(int, 0, 1000),
    "validation_fraction": Spec(float, 0.0, 0.5),
    "max_grad_norm": Spec(float, 0.0, 1000.0),
    "mixed_precision": Spec(str, choices=PRECISIONS),
    "gradient_checkpointing": Spec(bool),
    "packing": Spec(bool, tasks=("sft",)),
    "generation_eval_samples": Spec(int, 0, 256, tasks=("sft",)),
    "lora_rank": Spec(int, 1, 1024, methods=("lora",)),
    "lora_alpha": Spec(float, 0.01, 4096, methods=("lora",)),
    "lora_dropout": Spec(float, 0.0, 0.9, methods=("lora",)),
    "lora_target_modules": Spec(list, methods=("lora",)),
    "merge_adapter": Spec(bool, methods=("lora",), tasks=("sft", "dpo", "classification")),
    "dpo_beta": Spec(float, 1e-4, 10.0, tasks=("dpo",)),
    "image_size": Spec(int, 32, 2048, tasks=("text_to_image",)),
}

DEFAULTS: dict[str, Any] = {
    "epochs": 3,
    "batch_size": 8,
    "gradient_accumulation_steps": 1,
    "lr_scheduler": "linear",
    "warmup_ratio": 0.05,
    "weight_decay": 0.0,
    "max_seq_length": 512,
    "seed": 42,
    "max_steps": None,
    "eval_every_steps": 50,
    "checkpoint_every_steps": 50,
    "log_every_steps": 10,
    "early_stopping_patience": 0,
    "validation_fraction": 0.1,
    "max_grad_norm": 1.0,
    "mixed_precision": "auto",
    "gradient_checkpointing": False,
}
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": {"packing": True, "generation_eval_samples": 8},
    "dpo": {"dpo_beta": 0.1},
    "text_to_image": {"image_size": 64, "epochs": 1, "batch_size": 2},
    "classification": {},
}
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"learning_rate": 2e-4, "lora_rank": 8, "lora_alpha": 16.0, "lora_dropout": 0.05,
             "lora_target_modules": None, "merge_adapter": False},
    "full": {"learning_rate": 5e-5},
}


def task_check(task: Any) -> str:
    if task not in TASKS:
        raise ValidationFailed(f"task: one of {', '.join(TASKS)}", details={"field": "task", "allowed": list(TASKS)})
    return task


def method_check(task: str, method: Any) -> str:
    if method not in METHODS:
        raise ValidationFailed(f"method: one of {', '.join(METHODS)}", details={"field": "method", "allowed": list(METHODS)})
    if task == "text_to_image" and method != "lora":
        raise ValidationFailed("method: text_to_image fine-tunes train a LoRA adapter only",
                               details={"field": "method", "allowed": ["lora"]})
    return method


def _applies(spec: Spec, task: str, method: str) -> bool:
    return (spec.tasks is None or task in spec.tasks) and (spec.methods is None or method in spec.methods)


def _refuse(key: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"hyperparameters.{key}: {message}", details={"field": f"hyperparameters.{key}"})


def hyperparameters_validate(task: str, method: str, given: Any) -> dict[str, Any]:
    """The full hyperparameters (defaults filled in) for the task and method, or ValidationFailed
    naming the first key that is unknown, not allowed for the task/method, mistyped or out of range."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ValidationFailed("hyperparameters: an object", details={"field": "hyperparameters"})
    values = {key: value for key, value in {**DEFAULTS, **TASK_DEFAULTS[task], **METHOD_DEFAULTS[method]}.items()
              if _applies(SPECS[key], task, method)}
    for key, value in given.items():
        spec = SPECS.get(key)
        if spec is None:
            raise _refuse(key, f"unknown; known keys: {', '.join(sorted(SPECS))}")
        if spec.tasks is not None and task not in spec.tasks:
            raise _refuse(key, f"applies to {', '.join(spec.tasks)} fine-tunes, not {task}")
        if spec.methods is not None and method not in spec.methods:
            raise _refuse(key, f"applies to {', '.join(spec.methods)} fine-tunes, not {method}")
        if value is None and key in NULLABLE:
            values[key] = None  # the default: no step cap, the architecture's target modules
            continue
        values[key] = _value_check(key, spec, value)
    if values.get("lora_target_modules") is not None:
        modules = values["lora_target_modules"]
        if not modules or not all(isinstance(name, str) and name and len(name) <= 100 for name in modules):
            raise _refuse("lora_target_modules", "a non-empty list of module names")
    return values


def _value_check(key: str, spec: Spec, value: Any) -> Any:
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise _refuse(key, "true or false")
        return value
    if spec.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _refuse(key, "an integer")
    elif spec.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise _refuse(key, "a number")
        value = float(value)
    elif spec.kind is str:
        if value not in (spec.choices or ()):
            raise _refuse(key, f"one of {', '.join(spec.choices or ())}")
        return value
    elif spec.kind is list:
        if not isinstance(value, list):
            raise _refuse(key, "a list")
        return list(value)
    if spec.low is not None and value < spec.low:
        raise _refuse(key, f"at least {spec.low:g}")
    if spec.high is not None and value > spec.high:
        raise _refuse(key, f"at most {spec.high:g}")
    return value


def lora_targets_for(model_type: str) -> list[str]:
    """Default LoRA target modules for a transformers `model_type` (or "unet")."""
    return list(LORA_TARGETS.get(model_type, LORA_TARGETS["llama"]))


# Estimated training throughput (tokens/s) of one GPU of each class for a 1B-parameter model with
# LoRA; full fine-tuning runs at about two thirds of it. Throughput scales inversely with the
# parameter count. `cpu` is what a worker without CUDA reaches (measured on tiny models).
THROUGHPUT_TOKENS_PER_S_1B: dict[str, float] = {
    "cpu": 150.0,
    "t4": 1_500.0,
    "a10g": 3_500.0,
    "l4": 3_500.0,
    "a100": 12_000.0,
    "h100": 25_000.0,
    "h200": 28_000.0,
}
CHARS_PER_TOKEN = 4.0
OVERHEAD_SECONDS = 30.0  # loading the model, evaluation, saving


def compute_estimate(*, gpu_class: str, parameter_count: int, train_chars: int, epochs: int,
                     method: str, gpus: int = 1, max_steps: int | None = None, batch_tokens: int | None = None) -> dict[str, Any]:
    """tokens x epochs over the GPU class's throughput: the GPU-seconds a job should take."""
    rate = THROUGHPUT_TOKENS_PER_S_1B.get(gpu_class, THROUGHPUT_TOKENS_PER_S_1B["cpu"])
    rate *= 1e9 / max(parameter_count, 1_000_000)
    if method == "full":
        rate *= 2 / 3
    tokens = max(int(train_chars / CHARS_PER_TOKEN), 1) * epochs
    if max_steps is not None and batch_tokens:
        tokens = min(tokens, max_steps * batch_tokens)
    seconds = tokens / (rate * gpus) + OVERHEAD_SECONDS
    return {"tokens": tokens, "seconds": round(seconds, 1), "gpu_seconds": round(seconds * gpus, 1),
            "gpu_class": gpu_class, "tokens_per_second": round(rate * gpus, 1)}
