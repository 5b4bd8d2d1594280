"""`tiny-gpt2-classifier`: GPT2ForSequenceClassification with the tiny GPT-2's shape and tokenizer.

Given the pre-trained tiny GPT-2's folder, it starts from that transformer (as real classifiers
start from a pre-trained LM) and only the classification head is random; without one, the whole
model is randomly initialised. GPT-2 classifies from the last non-pad token, so `pad_token_id` is
set in the config."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, GPT2ForSequenceClassification, GPT2LMHeadModel

from workers.tiny_models import TASK_SEQUENCE_CLASSIFICATION, TINY_GPT2_CLASSIFIER
from workers.tiny_models.causal_lm import gpt2_config
from workers.tiny_models.manifest import BuiltModel, manifest_read, manifest_write
from workers.tiny_models.tokenizer import build_tokenizer

DEFAULT_LABELS = ("negative", "positive")


def sequence_classifier_recipe(
    *, seed: int, labels: Sequence[str], base_manifest: dict[str, Any] | None
) -> dict[str, Any]:
    """What determines the build; a new base LM (another revision) means a new classifier."""
    return {
        "seed": seed,
        "labels": list(labels),
        "base_model": base_manifest.get("name") if base_manifest else None,
        "base_revision": base_manifest.get("revision") if base_manifest else None,
    }


def build_sequence_classifier(
    *,
    output_dir: Path,
    name: str = TINY_GPT2_CLASSIFIER,
    seed: int = 0,
    labels: Sequence[str] = DEFAULT_LABELS,
    base_model_dir: Path | None = None,
) -> BuiltModel:
    """Saves a sequence classifier with `len(labels)` labels (and its tokenizer) into `output_dir`."""
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError("A classifier needs at least two distinct labels.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    base_manifest = manifest_read(Path(base_model_dir)) if base_model_dir is not None else None
    if base_model_dir is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
        tokenizer.save_pretrained(str(output_dir))
    else:
        tokenizer = build_tokenizer(output_dir=output_dir)

    config = gpt2_config(tokenizer=tokenizer)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: index for index, label in enumerate(labels)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2ForSequenceClassification(config)
    if base_model_dir is not None:
        base = GPT2LMHeadModel.from_pretrained(str(base_model_dir))
        # Same config shape by construction; strict loading fails loudly if that ever drifts.
        model.transformer.load_state_dict(base.transformer.state_dict(), strict=True)
    model.eval()
    model.save_pretrained(str(output_dir))
    manifest = manifest_write(
        folder=output_dir,
        name=name,
        task_type=TASK_SEQUENCE_CLASSIFICATION,
        architecture=type(model).__name__,
        parameter_count=sum(p.numel() for p in model.parameters()),
        extra={
            "recipe": sequence_classifier_recipe(seed=seed, labels=labels, base_manifest=base_manifest),
            "labels": list(labels),
            "vocab_size": len(tokenizer),
            "initialised_from": (base_manifest or {}).get("name", "pretrained") if base_model_dir else "random",
        },
    )
    return BuiltModel(name=name, folder=output_dir, manifest=manifest)
