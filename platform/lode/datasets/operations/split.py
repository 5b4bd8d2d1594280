"""Assigning rows to train, validation and test splits: reproducible from a seed, optionally
stratified by label."""
from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence

SPLITS = ("train", "validation", "test")


def split_ratios_check(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != 3:
        raise ValueError("ratios: three numbers (train, validation, test)")
    values = tuple(float(r) for r in ratios)
    if any(not math.isfinite(r) or r < 0 for r in values):
        raise ValueError("ratios: each must be a number of 0 or more")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"ratios: must sum to 1, not {sum(values):g}")
    return values  # type: ignore[return-value]


def split_counts(size: int, ratios: Sequence[float]) -> list[int]:
    """How many of `size` rows go to each split: the floors of the exact shares, the rows left
    over given to the largest remainders (ties to the earlier split). Each count is within one
    row of its exact share."""
    exact = [size * r for r in ratios]
    counts = [math.floor(value) for value in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda index: (-(exact[index] - counts[index]), index))
    for index in by_remainder[: size - sum(counts)]:
        counts[index] += 1
    return counts


def split_assign(n: int, *, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int,
                 labels: Sequence[Hashable] | None = None) -> list[str]:
    """"train", "validation" or "test" for each of n rows. The same (n, ratios, seed, labels) give
    the same answer everywhere. With labels, rows are split label by label (each label's rows
    shuffled with its own generator, derived from the seed and the label), so every split holds
    each label in the proportions asked, to within one row."""
    shares = split_ratios_check(ratios)
    if n < 0:
        raise ValueError("n must be 0 or more")
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels: {len(labels)} given for {n} rows")
    groups: dict[Hashable, list[int]] = {}
    if labels is None:
        groups[None] = list(range(n))
    else:
        for index, label in enumerate(labels):
            groups.setdefault(label, []).append(index)
    assignment = [""] * n
    for label, indices in groups.items():
        # repr() keeps labels of different types apart (1 and "1"); str seeds are hashed with
        # SHA-512 by random.Random, independent of PYTHONHASHSEED.
        rng = random.Random(f"{seed}\x00{label!r}" if labels is not None else seed)
        rng.shuffle(indices)
        position = 0
        for name, count in zip(SPLITS, split_counts(len(indices), shares)):
            for index in indices[position: position + count]:
                assignment[index] = name
            position += count
    return assignment
