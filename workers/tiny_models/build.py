"""Builds every tiny model into `<root>/<name>`, reusing a folder whose manifest is complete and
was built from the same recipe (seed, steps, corpus, ...), so repeated runs cost nothing.

Each model is built in a staging folder beside its final place and renamed into it when whole:
an interrupted build never leaves a folder that looks finished."""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workers.tiny_models import TINY_GPT2, TINY_GPT2_CLASSIFIER, TINY_MODEL_NAMES, TINY_SD
from workers.tiny_models.manifest import BuiltModel, folder_is_complete, manifest_read

LogCallback = Callable[[str], None]
StepCallback = Callable[[int, int, float], None]


def _cached(folder: Path, recipe: dict[str, Any]) -> BuiltModel | None:
    manifest = manifest_read(folder)
    if manifest is None or manifest.get("recipe") != recipe or not folder_is_complete(folder, manifest=manifest):
        return None
    return BuiltModel(name=manifest["name"], folder=folder, manifest=manifest)


def _build_staged(*, final: Path, build: Callable[[Path], BuiltModel]) -> BuiltModel:
    staging = final.with_name(f".{final.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        built = build(staging)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BuiltModel(name=built.name, folder=final, manifest=built.manifest)


def build_all(
    *,
    root: Path,
    seed: int = 0,
    pretrain_steps: int | None = None,
    image_size: int | None = None,
    force: bool = False,
    names: Sequence[str] = TINY_MODEL_NAMES,
    log: LogCallback | None = None,
    on_step: StepCallback | None = None,
) -> list[BuiltModel]:
    """Builds (or reuses) the named tiny models under `root`, in dependency order.

    `pretrain_steps` defaults to the full pre-training; tests pass a few dozen steps. The
    classifier needs the tiny GPT-2, which is built (or reused) even when not named."""
    # Heavy imports (torch, transformers) only once there is work to do.
    from workers.tiny_models.causal_lm import (
        DEFAULT_LEARNING_RATE,
        DEFAULT_PRETRAIN_STEPS,
        build_causal_lm,
        causal_lm_recipe,
    )
    from workers.tiny_models.classifier import DEFAULT_LABELS, build_sequence_classifier, sequence_classifier_recipe
    from workers.tiny_models.diffusion import DEFAULT_IMAGE_SIZE, build_text_to_image, text_to_image_recipe

    unknown = sorted(set(names) - set(TINY_MODEL_NAMES))
    if unknown:
        raise ValueError(f"Unknown tiny models: {', '.join(unknown)}")
    say = log or (lambda message: None)
    steps = DEFAULT_PRETRAIN_STEPS if pretrain_steps is None else pretrain_steps
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    wanted = set(names) | ({TINY_GPT2} if TINY_GPT2_CLASSIFIER in names else set())
    built: dict[str, BuiltModel] = {}

    def obtain(name: str, recipe: dict[str, Any], build: Callable[[Path], BuiltModel]) -> None:
        folder = root / name
        cached = None if force else _cached(folder, recipe)
        if cached is not None:
            say(f"{name}: reusing the build in {folder}")
            built[name] = cached
            return
        say(f"{name}: building into {folder}")
        started = time.monotonic()
        built[name] = _build_staged(final=folder, build=build)
        say(f"{name}: built in {time.monotonic() - started:.1f} s")

    if TINY_GPT2 in wanted:
        obtain(
            TINY_GPT2,
            causal_lm_recipe(seed=seed, steps=steps, learning_rate=DEFAULT_LEARNING_RATE),
            lambda out: build_causal_lm(output_dir=out, seed=seed, steps=steps, on_step=on_step),
        )
    if TINY_GPT2_CLASSIFIER in wanted:
        base = built[TINY_GPT2]
        obtain(
            TINY_GPT2_CLASSIFIER,
            sequence_classifier_recipe(seed=seed, labels=DEFAULT_LABELS, base_manifest=base.manifest),
            lambda out: build_sequence_classifier(output_dir=out, seed=seed, base_model_dir=base.folder),
        )
    if TINY_SD in wanted:
        obtain(
            TINY_SD,
            text_to_image_recipe(seed=seed, image_size=size),
            lambda out: build_text_to_image(output_dir=out, seed=seed, image_size=size),
        )
    return [built[name] for name in TINY_MODEL_NAMES if name in names]
