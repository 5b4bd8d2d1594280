"""Near-duplicate detection benchmark: `lode.datasets.operations.dedup.near_duplicate_clusters` over
a million short texts with planted near-copies, its recall and precision on them, against the
textbook datasketch pipeline in the same run.

    .venv/bin/python bench/near_dedup.py --quick   # 100,000 texts, under two minutes
    .venv/bin/python bench/near_dedup.py           # 1,000,000 texts, a few minutes

Pure Python and numpy: no Django, no services.

Corpus (seeded): texts of 8 to 20 words drawn from a Zipf-distributed vocabulary of 20,000 made-up
words, capitalised, ending with . ! or ?, half with a comma. 5% of the rows are planted
near-copies: a copy of a uniformly chosen earlier row (possibly itself a copy) with 1 or 2 small
edits, each one of: casing changed, whitespace doubled, punctuation added/removed/changed, one
letter replaced (typo), one word replaced by another word of the vocabulary. The (source, copy)
pairs are the ground truth.

- Recall: the share of planted pairs whose two rows end up in the same cluster.
- Precision: each non-first row of a predicted cluster makes a predicted pair with the cluster's
  first row (the row that is kept); the pair is correct when the two rows are planted copies of one
  another (directly or through a chain of copies), or, failing that, when the exact Jaccard
  similarity of their character n-gram sets is at least the threshold (two generated texts that
  happen to be near-identical). "strict" precision counts only the planted ones.
- Ceiling: the share of planted pairs whose exact Jaccard similarity reaches the threshold. A pair
  below it is not a near-duplicate by the definition the function implements, so no correct
  implementation finds it; "recall of findable" is recall among the pairs at or above it.

Baseline (the BENCH line's): datasketch, one `MinHash` per row fed with `update()` once per
shingle (the same normalised character n-grams), `MinHashLSH` with the same threshold and
permutations, `insert` then `query` for every row, candidates joined with union-find. It runs on
the first rows only (20,000; --quick 5,000) and its time per row is extrapolated linearly to the
full size (an optimistic figure for it: its LSH queries get slower as the index grows). Our
function also runs on that slice, so both are compared on the same rows.

Figures are medians over --rounds runs. Time is wall-clock for the whole call, normalisation and
exact verification included; generating the corpus and scoring are not timed.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT / "platform"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402

from bench.harness import BenchError, log, run_cli  # noqa: E402
from lode.datasets.operations import dedup  # noqa: E402

TARGET_SECONDS_1M = 60.0
TARGET_RATIO = 10.0
TARGET_RECALL = 0.95
TARGET_PRECISION = 0.95
TARGET_TEXT = "<60 s for 1M rows, >=10x datasketch, recall>=0.95 at precision>=0.95"
EDITS = ("case", "space", "punct", "typo", "word")
DEFAULT_THRESHOLD = 0.8  # near_duplicate_clusters' default


# --- corpus ----------------------------------------------------------------------------------------


@dataclass
class Corpus:
    texts: list[str]
    pairs: list[tuple[int, int]]  # (source, planted copy)
    edits: list[tuple[str, ...]]  # the edits of each planted copy
    group: np.ndarray  # ground-truth group per row: rows linked by chains of copies share one


def _vocabulary(size: int, rng: random.Random) -> list[str]:
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        words.add("".join(rng.choice(consonants) + rng.choice(vowels) + (rng.choice(consonants) if rng.random() < 0.3 else "")
                          for _ in range(syllables)))
    return sorted(words)


class _WordSampler:
    def __init__(self, vocabulary: list[str], rng: random.Random):
        weights = 1.0 / np.arange(1, len(vocabulary) + 1)
        self.cdf = np.cumsum(weights / weights.sum())
        self.vocabulary = vocabulary
        self.rng = rng

    def one(self) -> str:
        return self.vocabulary[min(int(np.searchsorted(self.cdf, self.rng.random())), len(self.vocabulary) - 1)]


def _edit(text: str, kind: str, rng: random.Random, words: _WordSampler) -> str:
    tokens = text.split(" ")
    index = rng.choice([i for i, token in enumerate(tokens) if token])
    token = tokens[index]
    if kind == "case":
        tokens[index] = token.upper() if token[:1].islower() and rng.random() < 0.5 else (
            token.lower() if token[:1].isupper() else token.capitalize())
    elif kind == "space":
        tokens[index] = token + " "
    elif kind == "punct":
        if token[-1] in ",.!?;:":
            tokens[index] = token[:-1] + rng.choice(["", ";", ":", "!", "?", "."])
        else:
            tokens[index] = token + rng.choice(",;:")
    elif kind == "typo":
        letters = [i for i, char in enumerate(token) if char.isalpha()]
        if letters:
            at = rng.choice(letters)
            tokens[index] = token[:at] + rng.choice("abcdefghijklmnopqrstuvwxyz") + token[at + 1:]
    else:  # word
        tail = "".join(char for char in token if not char.isalpha())
        tokens[index] = words.one() + tail
    return " ".join(tokens)


def corpus_build(n: int, *, seed: int, planted_share: float = 0.05) -> Corpus:
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    vocabulary = _vocabulary(20_000, rng)
    words = _WordSampler(vocabulary, rng)
    lengths = nprng.integers(8, 21, size=n)
    drawn = np.searchsorted(words.cdf, nprng.random(int(lengths.sum())))
    drawn = np.minimum(drawn, len(vocabulary) - 1)
    is_copy = nprng.random(n) < planted_share
    is_copy[:100] = False
    texts: list[str] = []
    pairs: list[tuple[int, int]] = []
    edits: list[tuple[str, ...]] = []
    position = 0
    for index in range(n):
        length = int(lengths[index])
        if is_copy[index]:
            source = rng.randrange(index)
            kinds = tuple(rng.choice(EDITS) for _ in range(rng.choice((1, 2))))
            text = texts[source]
            for kind in kinds:
                text = _edit(text, kind, rng, words)
            texts.append(text)
            pairs.append((source, index))
            edits.append(kinds)
        else:
            tokens = [vocabulary[i] for i in drawn[position: position + length].tolist()]
            if rng.random() < 0.5:
                tokens[rng.randrange(length - 1)] += ","
            text = " ".join(tokens)
            texts.append(text[0].upper() + text[1:] + rng.choice(".....!?"))
        position += length
    parent = list(range(n))

    def find(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for source, copy in pairs:
        parent[find(copy)] = find(source)
    group = np.fromiter((find(i) for i in range(n)), dtype=np.int64, count=n)
    return Corpus(texts=texts, pairs=pairs, edits=edits, group=group)


# --- scoring ---------------------------------------------------------------------------------------------


@dataclass
class Quality:
    pairs: int
    found: int
    findable: int
    found_findable: int
    predicted: int
    predicted_planted: int
    predicted_similar: int
    missed_by_edit: dict[str, tuple[int, int]]
    findable_at_default: int  # planted pairs at or above the function's default threshold

    @property
    def recall(self) -> float:
        return self.found / self.pairs if self.pairs else float("nan")

    @property
    def ceiling(self) -> float:
        return self.findable / self.pairs if self.pairs else float("nan")

    @property
    def recall_findable(self) -> float:
        return self.found_findable / self.findable if self.findable else float("nan")

    @property
    def precision(self) -> float:
        return (self.predicted_planted + self.predicted_similar) / self.predicted if self.predicted else 1.0

    @property
    def strict_precision(self) -> float:
        return self.predicted_planted / self.predicted if self.predicted else 1.0


class _Similarity:
    def __init__(self, texts: list[str], ngram: int):
        self.keys = dedup.comparison_keys(texts)
        self.ngram = ngram

    def __call__(self, a: int, b: int) -> float:
        return dedup.jaccard(dedup.shingle_set(self.keys[a], self.ngram), dedup.shingle_set(self.keys[b], self.ngram))


def quality_score(corpus: Corpus, clusters: list[list[int]], *, rows: int, threshold: float, similarity: _Similarity) -> Quality:
    """Scores clusters over the first `rows` rows of the corpus."""
    cluster_of = np.full(rows, -1, dtype=np.int64)
    for number, cluster in enumerate(clusters):
        cluster_of[cluster] = number
    pairs = [(a, b, kinds) for (a, b), kinds in zip(corpus.pairs, corpus.edits) if b < rows]
    found = findable = found_findable = findable_at_default = 0
    missed: dict[str, list[int]] = {}
    for a, b, kinds in pairs:
        hit = cluster_of[a] >= 0 and cluster_of[a] == cluster_of[b]
        value = similarity(a, b)
        ok = value >= threshold
        findable_at_default += value >= DEFAULT_THRESHOLD
        found += hit
        findable += ok
        found_findable += hit and ok
        label = "+".join(sorted(kinds))
        counts = missed.setdefault(label, [0, 0])
        counts[0] += 1
        counts[1] += not hit
    predicted = planted = similar = 0
    for cluster in clusters:
        first = cluster[0]
        for other in cluster[1:]:
            predicted += 1
            if corpus.group[first] == corpus.group[other]:
                planted += 1
            elif similarity(first, other) >= threshold:
                similar += 1
    return Quality(pairs=len(pairs), found=found, findable=findable, found_findable=found_findable, predicted=predicted,
                   predicted_planted=planted, predicted_similar=similar,
                   missed_by_edit={label: (total, miss) for label, (total, miss) in sorted(missed.items())},
                   findable_at_default=findable_at_default)


# --- the two paths -----------------------------------------------------------------------------------------


def lode_run(texts: list[str], args) -> tuple[float, list[list[int]]]:
    started = time.perf_counter()
    clusters = dedup.near_duplicate_clusters(texts, threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram)
    return time.perf_counter() - started, clusters


def datasketch_run(texts: list[str], args) -> tuple[float, list[list[int]]]:
    """The textbook pipeline: MinHash.update() per shingle, MinHashLSH insert and query per row.
    Shingles are the same normalised character n-grams ours uses (normalising is not timed)."""
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        raise BenchError("the baseline needs datasketch (pip install -e '.[test]')") from None
    keys = dedup.comparison_keys(texts)
    ngram = args.ngram
    started = time.perf_counter()
    index = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm)
    sketches = []
    for row, key in enumerate(keys):
        sketch = MinHash(num_perm=args.num_perm, seed=1)
        padded = key if len(key) >= ngram else key + "\x00" * (ngram - len(key))
        for shingle in {padded[i: i + ngram] for i in range(len(padded) - ngram + 1)}:
            sketch.update(shingle.encode("utf-8"))
        index.insert(row, sketch)
        sketches.append(sketch)
    parent = list(range(len(keys)))

    def find(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for row, sketch in enumerate(sketches):
        for other in index.query(sketch):
            a, b = find(row), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for row in range(len(keys)):
        groups.setdefault(find(row), []).append(row)
    elapsed = time.perf_counter() - started
    return elapsed, sorted((group for group in groups.values() if len(group) > 1), key=lambda group: group[0])


# --- report -------------------------------------------------------------------------------------------------


def _quality_lines(name: str, quality: Quality) -> list[str]:
    return [
        f"  {name}: recall {quality.recall:.4f} ({quality.found}/{quality.pairs} planted pairs), "
        f"precision {quality.precision:.4f} (strict {quality.strict_precision:.4f}; {quality.predicted} predicted pairs: "
        f"{quality.predicted_planted} planted, {quality.predicted_similar} near-identical by chance, "
        f"{quality.predicted - quality.predicted_planted - quality.predicted_similar} wrong)",
        f"  {'':{len(name)}}  ceiling {quality.ceiling:.4f} (planted pairs with exact Jaccard >= threshold), "
        f"recall of those {quality.recall_findable:.4f}",
    ]


def run(args: argparse.Namespace) -> None:
    n = args.rows or (100_000 if args.quick else 1_000_000)
    slice_rows = min(n, args.baseline_rows or (5_000 if args.quick else 20_000))
    bands, rows_per_band = dedup.lsh_bands(args.threshold, args.num_perm)
    log(f"near_dedup: {n:,} texts, {args.rounds} rounds; threshold {args.threshold}, character {args.ngram}-grams, "
        f"{args.num_perm} permutations (LSH: {bands} bands x {rows_per_band} rows)")
    started = time.perf_counter()
    corpus = corpus_build(n, seed=args.seed)
    log(f"corpus built in {time.perf_counter() - started:.1f}s: {len(corpus.pairs):,} planted near-copies, "
        f"mean {statistics.mean(len(t) for t in corpus.texts[:10000]):.0f} characters per text")
    log("examples: " + " | ".join(f"{corpus.texts[a]!r} -> {corpus.texts[b]!r}" for a, b in corpus.pairs[:2]))

    dedup.near_duplicate_clusters(corpus.texts[:2000], threshold=args.threshold)  # warm-up (imports, tables)

    lode_times, clusters = [], []
    for index in range(1, args.rounds + 1):
        elapsed, clusters = lode_run(corpus.texts, args)
        lode_times.append(elapsed)
        log(f"round {index}/{args.rounds}: lode {elapsed:.2f}s for {n:,} rows ({n / elapsed:,.0f} rows/s), {len(clusters):,} clusters")
    slice_texts = corpus.texts[:slice_rows]
    base_times, lode_slice_times, base_clusters, lode_slice_clusters = [], [], [], []
    for index in range(1, args.rounds + 1):
        elapsed, base_clusters = datasketch_run(slice_texts, args)
        base_times.append(elapsed)
        lode_elapsed, lode_slice_clusters = lode_run(slice_texts, args)
        lode_slice_times.append(lode_elapsed)
        log(f"round {index}/{args.rounds}: datasketch {elapsed:.2f}s for the first {slice_rows:,} rows "
            f"({slice_rows / elapsed:,.0f} rows/s); lode on the same rows {lode_elapsed:.2f}s")

    log("scoring ...")
    similarity = _Similarity(corpus.texts, args.ngram)
    full = quality_score(corpus, clusters, rows=n, threshold=args.threshold, similarity=similarity)
    lode_slice = quality_score(corpus, lode_slice_clusters, rows=slice_rows, threshold=args.threshold, similarity=similarity)
    base_slice = quality_score(corpus, base_clusters, rows=slice_rows, threshold=args.threshold, similarity=similarity)

    ours = statistics.median(lode_times)
    base_per_row = statistics.median(base_times) / slice_rows
    baseline = base_per_row * n
    ratio = baseline / ours
    ours_1m = ours * 1_000_000 / n
    log("")
    log(f"{'path':<52} {'seconds':>9} {'rows/s':>10}")
    log(f"{f'lode near_duplicate_clusters, {n:,} rows':<52} {ours:>9.2f} {n / ours:>10,.0f}")
    log(f"{f'datasketch, {slice_rows:,} rows':<52} {statistics.median(base_times):>9.2f} {1 / base_per_row:>10,.0f}")
    log(f"{f'datasketch extrapolated to {n:,} rows (linear)':<52} {baseline:>9.2f}")
    log(f"{f'lode on the same {slice_rows:,} rows':<52} {statistics.median(lode_slice_times):>9.2f} "
        f"{slice_rows / statistics.median(lode_slice_times):>10,.0f}")
    log(f"ratio (datasketch per row / lode per row, at {n:,} rows): {ratio:.1f}x")
    if n != 1_000_000:
        log(f"lode extrapolated linearly to 1,000,000 rows: {ours_1m:.1f}s")
    log("")
    log(f"quality over all {n:,} rows:")
    for line in _quality_lines("lode", full):
        log(line)
    if args.threshold != DEFAULT_THRESHOLD:
        log(f"  at the function's default threshold {DEFAULT_THRESHOLD} the ceiling would be "
            f"{full.findable_at_default / full.pairs:.4f}: one replaced word in a short text is a larger change than 0.8 allows")
    log("  planted pairs missed, by their edits (missed/total): " + ", ".join(
        f"{label} {miss}/{total}" for label, (total, miss) in full.missed_by_edit.items()))
    log(f"quality over the first {slice_rows:,} rows (both paths):")
    for line in _quality_lines("lode", lode_slice) + _quality_lines("datasketch", base_slice):
        log(line)

    fast_enough = ours_1m < TARGET_SECONDS_1M
    met = fast_enough and ratio >= TARGET_RATIO and full.recall >= TARGET_RECALL and full.precision >= TARGET_PRECISION
    if n == 1_000_000:
        how = "met judges the 1M-row time, the ratio, recall and precision"
    else:
        how = f"met judges the {n:,}-row time extrapolated linearly to 1M rows ({ours_1m:.1f}s), the ratio, recall and precision"
    log(how)
    log(f'BENCH near_dedup seconds={ours:.2f} baseline={baseline:.2f} ratio={ratio:.1f} '
        f'target="{TARGET_TEXT}" met={"yes" if met else "no"}')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 texts (baseline slice 5,000) instead of 1,000,000 (20,000)")
    parser.add_argument("--rows", type=int, default=None, help="texts (overrides --quick)")
    parser.add_argument("--baseline-rows", type=int, default=None, help="rows the datasketch baseline runs on")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; times are medians over them (default 3)")
    parser.add_argument("--threshold", type=float, default=0.7,
                        help="Jaccard threshold (default 0.7; see bench/README.md for why not the function's 0.8)")
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    return run_cli("near_dedup", run, args)


if __name__ == "__main__":
    sys.exit(main())
