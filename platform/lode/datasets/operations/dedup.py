"""Exact and near-duplicate detection over row texts.

Exact: `content_hash` of a row's canonical JSON. Near: `near_duplicate_clusters`, MinHash LSH over
character n-grams, in five steps with no Python loop per shingle or per permutation (one per row
at most):

1. Normalise each text for comparison (casefold, NFKC, punctuation and symbols dropped,
   whitespace collapsed: a few C-level passes over batches joined into one string), then collapse
   texts that are identical after that: they form clusters directly and only one of each goes on.
2. Hash every character n-gram of a batch of texts in numpy (a polynomial rolling hash over the
   UTF-32 code points, then a 64-bit finaliser), and hand rensa (Rust) each row's hash array to
   compute all MinHash signatures as one matrix (`RMinHash.digest_matrix_from_token_hash_sets`).
3. Ask rensa's banded LSH which rows share a band with any other row
   (`query_duplicate_flags_matrix_one_shot`, no index built); only those rows go further: a few
   percent on varied text, a fifth or so on a million short texts from a small vocabulary.
4. For those rows, get the signatures out (`to_rows`), band them again in numpy and list candidate
   pairs: in each bucket, every member pairs with the bucket's first member and with the member
   before it (linear in the bucket's size, so a template shared by thousands of rows cannot blow
   up quadratically).
5. Keep the pairs whose MinHash estimate is within a safety margin of the threshold, check them
   with the exact Jaccard similarity of their shingle sets (so precision does not depend on the
   sketch's noise), and join the survivors with union-find.

Why character n-grams rather than word n-grams: the rows we deduplicate are often short (a prompt,
a caption, a classification example). A sentence of ten words has only six word 5-grams, and one
changed word destroys five of them, whereas its ~50 character 5-grams lose about ten; character
shingles also work for languages written without spaces (Chinese, Japanese). Punctuation is
dropped before shingling because a changed comma or full stop says nothing about content and
would otherwise cost a short text several shingles.

The threshold is on the Jaccard similarity of the character n-gram sets. For orientation (5-grams):
one changed word in a 25-word sentence gives about 0.8; in a 12-word sentence about 0.7."""
from __future__ import annotations

import functools
import itertools
import re
import sys
import unicodedata
from collections.abc import Iterator, Sequence

import numpy as np
import orjson
import xxhash

# Texts are compared after this normalisation; "\x00" separates the texts of a batch processed as
# one string (row texts cannot contain it: schemas refuse NUL).
_SEP = "\x00"
_OTHER_SPACE = re.compile(r"[^\S ]")  # whitespace other than the plain space

# Rows per batch of the hashing and signature steps: bounds the memory of the flat shingle buffer
# (about 40 bytes per character of text in the batch). Small batches run faster: arrays under
# glibc's mmap threshold are reused instead of being page-faulted in afresh every time.
_BATCH_ROWS = 5_000
# Candidates whose MinHash estimate falls this far below the threshold are dropped before the
# exact check (about four standard deviations of a 128-permutation estimate near 0.8).
_ESTIMATE_MARGIN = 0.15
# Beyond this many candidate pairs the exact check (Python sets) would dominate the run; the
# MinHash estimate then decides on its own.
_EXACT_CHECK_MAX_PAIRS = 3_000_000
# Average probability, over similarities from the threshold to 1, that a pair shares an LSH band.
_LSH_RECALL = 0.99

_U64 = np.uint64
_MULTIPLIER = _U64(0x9E3779B97F4A7C15)


def content_hash(row: dict) -> str:
    """A stable hex digest of the row's content (canonical JSON with sorted keys, xxHash128)."""
    return xxhash.xxh3_128_hexdigest(orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS))


# --- normalisation for comparison -----------------------------------------------------------------


@functools.cache
def _dropped_characters() -> tuple[dict[int, str | None], re.Pattern]:
    """Punctuation and symbols (Unicode categories P* and S*): a str.translate table for ASCII text
    (which also maps every ASCII whitespace to a space) and a regular expression for the rest."""
    dropped = [cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] in "PS"]
    ascii_table: dict[int, str | None] = {cp: None for cp in dropped if cp < 128}
    ascii_table.update({ord(space): " " for space in "\t\n\v\f\r\x1c\x1d\x1e\x1f"})
    ranges, start, previous = [], dropped[0], dropped[0]
    for cp in dropped[1:] + [-1]:
        if cp != previous + 1:
            ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(previous)) if previous > start else ""))
            start = cp
        previous = cp
    return ascii_table, re.compile("[" + "".join(ranges) + "]+")


def _collapse_spaces(text: str) -> str:
    while "  " in text:
        text = text.replace("  ", " ")
    return text


def comparison_keys(texts: Sequence[str]) -> list[str]:
    """Each text casefolded (and NFKC-normalised), without punctuation and symbols, with whitespace collapsed to single
    spaces: the form near-duplicate detection compares. A text that is only punctuation keeps it
    (it would otherwise equal every other such text). Works on batches joined into one string, so
    the cost is a few C-level passes over the characters rather than Python work per character."""
    keys: list[str] = []
    for start in range(0, len(texts), 10_000):
        batch = texts[start: start + 10_000]
        joined = _SEP.join(batch)
        if joined.count(_SEP) != len(batch) - 1:  # NUL inside a text: fall back to one at a time
            keys.extend(key for text in batch for key in comparison_keys([text.replace(_SEP, " ")]))
            continue
        folded = joined.casefold()
        ascii_table, dropped = _dropped_characters()
        if folded.isascii():
            stripped = folded.translate(ascii_table)
        else:
            folded = unicodedata.normalize("NFKC", folded)  # full-width forms, ligatures, ...
            stripped = _OTHER_SPACE.sub(" ", dropped.sub("", folded))
        stripped = _collapse_spaces(stripped).replace(" " + _SEP, _SEP).replace(_SEP + " ", _SEP).strip(" ")
        batch_keys = stripped.split(_SEP)
        for index, key in enumerate(batch_keys):
            if not key:
                batch_keys[index] = " ".join(batch[index].casefold().split())
        keys.extend(batch_keys)
    return keys


# --- shingles ---------------------------------------------------------------------------------------


def _padded(keys: Sequence[str], ngram: int) -> list[str]:
    # A text shorter than one n-gram becomes a single shingle (itself, padded).
    return [key if len(key) >= ngram else key + _SEP * (ngram - len(key)) for key in keys]


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place: spreads the rolling hash's bits over all 64."""
    values ^= values >> _U64(30)
    values *= _U64(0xBF58476D1CE4E5B9)
    values ^= values >> _U64(27)
    values *= _U64(0x94D049BB133111EB)
    values ^= values >> _U64(31)
    return values


def shingle_hashes(keys: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit hashes of every character n-gram of every key, as one flat array, and the row
    offsets into it (len(keys) + 1 of them). Keys shorter than `ngram` give one shingle."""
    padded = _padded(keys, ngram)
    lengths = np.fromiter(map(len, padded), dtype=np.int64, count=len(padded))
    points = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(_U64)
    width = len(points) - ngram + 1
    rolling = points[:width].copy()
    for shift in range(1, ngram):
        rolling *= _MULTIPLIER
        rolling += points[shift: shift + width]
    del points
    counts = lengths - (ngram - 1)
    offsets = np.zeros(len(padded) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    row_starts = np.zeros(len(padded), dtype=np.int64)
    np.cumsum(lengths[:-1], out=row_starts[1:])
    # Position of each row's shingles in `rolling`: skip the n-grams that straddle two rows.
    positions = np.repeat(row_starts - offsets[:-1], counts)
    positions += np.arange(offsets[-1], dtype=np.int64)
    hashes = _mix64(rolling[positions])
    return hashes, offsets.astype(_U64)


def shingle_set(key: str, ngram: int) -> set[str]:
    (padded,) = _padded([key], ngram)
    return {padded[i: i + ngram] for i in range(len(padded) - ngram + 1)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


# --- LSH ----------------------------------------------------------------------------------------------


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band), bands * rows <= num_perm: the most rows per band (the fewest chance
    candidates) for which pairs with a similarity between the threshold and 1 still share a band
    with probability _LSH_RECALL on average (a pair exactly at the threshold somewhat less)."""
    grid = [threshold + (1 - threshold) * (step + 0.5) / 50 for step in range(50)]
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if sum(1 - (1 - s**rows) ** bands for s in grid) / len(grid) >= _LSH_RECALL:
            best = (bands, rows)
    return best


def _row_shingle_hashes(keys: Sequence[str], ngram: int) -> Iterator[np.ndarray]:
    """Each key's shingle hashes, computed a batch at a time (the whole corpus's would not be
    held at once)."""
    for start in range(0, len(keys), _BATCH_ROWS):
        hashes, offsets = shingle_hashes(keys[start: start + _BATCH_ROWS], ngram)
        bounds = offsets.tolist()
        for low, high in zip(bounds[:-1], bounds[1:]):
            yield hashes[low:high]


def _signatures(keys: Sequence[str], *, ngram: int, perms: int, seed: int):
    """rensa's MinHash signatures of the keys, one row each (an RMinHashDigestMatrix)."""
    import rensa

    return rensa.RMinHash.digest_matrix_from_token_hash_sets(_row_shingle_hashes(keys, ngram), perms, seed)


def _signature_array(keys: Sequence[str], *, ngram: int, perms: int, seed: int) -> np.ndarray:
    # to_rows() (lists of Python ints, ~13 us a row) is the one way out of rensa's matrix: the
    # reason only the rows the LSH flags come here.
    rows = _signatures(keys, ngram=ngram, perms=perms, seed=seed).to_rows()
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.uint32, count=len(keys) * perms)
    return flat.reshape(len(keys), perms)


def _flagged_rows(keys: Sequence[str], *, ngram: int, bands: int, rows_per_band: int, seed: int) -> np.ndarray:
    """Indices of the keys that share at least one LSH band with another key (rensa's one-shot
    banding over the signature matrix, without building an index)."""
    import rensa

    perms = bands * rows_per_band
    matrix = _signatures(keys, ngram=ngram, perms=perms, seed=seed)
    index = rensa.RMinHashLSH(0.5, perms, bands)  # its threshold argument plays no part in the banding
    flags = index.query_duplicate_flags_matrix_one_shot(matrix)
    return np.flatnonzero(np.asarray(flags, dtype=bool))


def _band_pairs(signatures: np.ndarray, band: slice) -> np.ndarray:
    """Candidate pairs (positions into `signatures`, smaller first) among rows with equal values in
    the band: each member with its bucket's first member and with the member before it."""
    columns = signatures[:, band].astype(_U64)
    key = np.zeros(len(signatures), dtype=_U64)
    for column in columns.T:
        key *= _MULTIPLIER
        key += column
    _mix64(key)
    order = np.argsort(key, kind="stable")
    same = key[order][1:] == key[order][:-1]
    if not same.any():
        return np.empty((0, 2), dtype=np.int64)
    bucket = np.concatenate([[0], np.cumsum(~same)])
    bucket_first = order[np.concatenate([[0], np.flatnonzero(~same) + 1])]
    chained = np.stack([order[:-1][same], order[1:][same]], axis=1)
    members = np.flatnonzero(np.concatenate([[False], same]))  # positions in `order` that are not first
    starred = np.stack([bucket_first[bucket[members]], order[members]], axis=1)
    pairs = np.concatenate([chained, starred])
    pairs.sort(axis=1)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def _unique_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    if not len(pairs):
        return pairs
    codes = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([codes // n, codes % n], axis=1)


def _estimates(signatures: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    out = np.empty(len(pairs), dtype=np.float64)
    step = max(1, 4_000_000 // signatures.shape[1])
    for start in range(0, len(pairs), step):
        chunk = pairs[start: start + step]
        out[start: start + step] = (signatures[chunk[:, 0]] == signatures[chunk[:, 1]]).mean(axis=1)
    return out


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, item: int) -> int:
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb

    def roots(self, touched: np.ndarray) -> np.ndarray:
        """Each item's root; only the `touched` items (those in some union) can have moved."""
        roots = np.arange(len(self.parent), dtype=np.int64)
        roots[touched] = [self.find(item) for item in touched.tolist()]
        return roots


def near_duplicate_pairs(keys: Sequence[str], *, threshold: float, num_perm: int, ngram: int, seed: int) -> np.ndarray:
    """Pairs (i, j), i < j, of positions in `keys` (already normalised and distinct) whose
    character n-gram sets have a Jaccard similarity of at least `threshold`."""
    if len(keys) < 2:
        return np.empty((0, 2), dtype=np.int64)
    bands, rows_per_band = lsh_bands(threshold, num_perm)
    flagged = _flagged_rows(keys, ngram=ngram, bands=bands, rows_per_band=rows_per_band, seed=seed)
    if len(flagged) < 2:
        return np.empty((0, 2), dtype=np.int64)
    perms = bands * rows_per_band
    signatures = _signature_array([keys[i] for i in flagged], ngram=ngram, perms=perms, seed=seed)
    kept = []
    for band in range(bands):
        pairs = _band_pairs(signatures, slice(band * rows_per_band, (band + 1) * rows_per_band))
        if len(pairs):
            kept.append(pairs[_estimates(signatures, pairs) >= threshold - _ESTIMATE_MARGIN])
    pairs = _unique_pairs(np.concatenate(kept) if kept else np.empty((0, 2), dtype=np.int64), len(flagged))
    if len(pairs) > _EXACT_CHECK_MAX_PAIRS:
        pairs = pairs[_estimates(signatures, pairs) >= threshold]
    else:
        shingles: dict[int, set[str]] = {}

        def shingles_of(position: int) -> set[str]:
            found = shingles.get(position)
            if found is None:
                found = shingles[position] = shingle_set(keys[flagged[position]], ngram)
            return found

        exact = np.fromiter(
            (jaccard(shingles_of(a), shingles_of(b)) >= threshold for a, b in pairs.tolist()), dtype=bool, count=len(pairs)
        )
        pairs = pairs[exact]
    return flagged[pairs]


def near_duplicate_clusters(
    texts: Sequence[str], *, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, seed: int = 1,
) -> list[list[int]]:
    """Groups of indices into `texts` (two or more each, ascending, ordered by their first index)
    whose texts are near-duplicates: connected components of the pairs whose character n-gram
    Jaccard similarity, after normalisation (see comparison_keys), is at least `threshold`."""
    if not 0 < threshold <= 1:
        raise ValueError("threshold must be in (0, 1]")
    if num_perm < 2 or ngram < 1:
        raise ValueError("num_perm must be at least 2 and ngram at least 1")
    n = len(texts)
    if n < 2:
        return []
    keys = comparison_keys(texts)
    distinct: dict[str, int] = {}
    inverse = np.fromiter((distinct.setdefault(key, len(distinct)) for key in keys), dtype=np.int64, count=n)
    unique_keys = list(distinct)
    del keys, distinct
    pairs = near_duplicate_pairs(unique_keys, threshold=threshold, num_perm=num_perm, ngram=ngram, seed=seed)
    if len(pairs):
        union = _UnionFind(len(unique_keys))
        for a, b in pairs.tolist():
            union.union(a, b)
        roots = union.roots(np.unique(pairs))[inverse]
    else:
        roots = inverse
    order = np.argsort(roots, kind="stable")  # stable: indices ascend within each group
    sorted_roots = roots[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_roots[1:] != sorted_roots[:-1]]))
    sizes = np.diff(np.append(starts, n))
    clusters = [order[start: start + size].tolist() for start, size in zip(starts.tolist(), sizes.tolist()) if size > 1]
    clusters.sort(key=lambda cluster: cluster[0])
    return clusters


def near_duplicate_keep_mask(clusters: Sequence[Sequence[int]], n: int) -> list[bool]:
    """True for the rows to keep: every row outside the clusters and the first row of each."""
    keep = [True] * n
    for cluster in clusters:
        first = min(cluster)
        for index in cluster:
            if index != first:
                keep[index] = False
    return keep
