"""Statistics over a dataset's rows, accumulated shard by shard: size, text lengths, labels,
language mix and personal-data hits (on a sample), exact duplicates."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import xxhash

from ..schemas import Modality, modality_get, row_texts
from .filters import UNDETERMINED, language_of
from .pii import TYPES as PII_TYPES
from .pii import pii_find

# Upper bounds of the character-length bins: 0, then powers of two; the last bin is open.
LENGTH_BIN_EDGES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
SAMPLE_ROWS = 2_000
MAX_LABELS_REPORTED = 200


class TextStats:
    """Feed rows with update(rows), as many times as there are shards; result() gives a
    JSON-serialisable summary. The language mix and PII hit rates look at the first `sample_rows`
    rows only (both cost milliseconds per row). Exact duplicates are counted over all rows by a
    64-bit hash of the row's modality fields (8 bytes a row). near_duplicates is left None for the
    caller to fill in (it needs all texts at once)."""

    def __init__(self, modality: Modality | str, *, fields: tuple[str, ...] | list[str] | None = None,
                 sample_rows: int = SAMPLE_ROWS, pii_types: tuple[str, ...] | list[str] | None = None):
        self.modality = modality_get(modality) if isinstance(modality, str) else modality
        self.fields = tuple(fields or self.modality.text_fields)
        self.sample_rows = sample_rows
        self.pii_types = tuple(pii_types or PII_TYPES)
        self.rows = 0
        self.chars = 0
        self.min_chars: int | None = None
        self.max_chars = 0
        self.length_counts = np.zeros(len(LENGTH_BIN_EDGES), dtype=np.int64)
        self.labels: Counter[str] = Counter()
        self.languages: Counter[str] = Counter()
        self.pii_rows: Counter[str] = Counter()
        self.pii_matches: Counter[str] = Counter()
        self.sampled = 0
        self._hashes: list[np.ndarray] = []

    def update(self, rows: Iterable[dict[str, Any]]) -> None:
        lengths: list[int] = []
        hashes: list[int] = []
        names = self.modality.field_names
        label_field = self.modality.label_field
        for row in rows:
            texts = row_texts(self.modality, row, self.fields)
            length = sum(len(text) for text in texts if text)
            lengths.append(length)
            hashes.append(xxhash.xxh3_64_intdigest(orjson.dumps({name: row.get(name) for name in names},
                                                                option=orjson.OPT_SORT_KEYS)))
            if label_field:
                value = row.get(label_field)
                if isinstance(value, list):
                    self.labels.update(str(label) for label in value)
                elif value is not None:
                    self.labels[str(value)] += 1
            if self.sampled < self.sample_rows:
                self.sampled += 1
                joined = "\n".join(text for text in texts if text)
                self.languages[language_of(joined)[0]] += 1
                kinds = Counter(match.type for match in pii_find(joined, types=self.pii_types))
                self.pii_matches.update(kinds)
                self.pii_rows.update(kinds.keys())
        if not lengths:
            return
        array = np.asarray(lengths, dtype=np.int64)
        self.rows += len(array)
        self.chars += int(array.sum())
        self.min_chars = int(array.min()) if self.min_chars is None else min(self.min_chars, int(array.min()))
        self.max_chars = max(self.max_chars, int(array.max()))
        self.length_counts += np.bincount(np.searchsorted(LENGTH_BIN_EDGES, array, side="right") - 1,
                                          minlength=len(LENGTH_BIN_EDGES))
        self._hashes.append(np.asarray(hashes, dtype=np.uint64))

    def result(self) -> dict[str, Any]:
        hashes = np.concatenate(self._hashes) if self._hashes else np.empty(0, dtype=np.uint64)
        duplicates = int(len(hashes) - len(np.unique(hashes)))
        bins = [{"min": low, "max": high - 1 if high is not None else None, "rows": int(count)}
                for low, high, count in zip(LENGTH_BIN_EDGES, list(LENGTH_BIN_EDGES[1:]) + [None], self.length_counts)]
        labels = None
        if self.modality.label_field:
            top = self.labels.most_common(MAX_LABELS_REPORTED)
            labels = {"distinct": len(self.labels), "counts": dict(top),
                      "other": sum(self.labels.values()) - sum(count for _, count in top)}
        sampled = self.sampled
        return {
            "rows": self.rows,
            "chars": {"total": self.chars, "min": self.min_chars or 0, "max": self.max_chars,
                      "mean": round(self.chars / self.rows, 2) if self.rows else 0.0, "histogram": bins},
            "labels": labels,
            "languages": {"sample_rows": sampled,
                          "shares": {code: round(count / sampled, 4) for code, count in self.languages.most_common()},
                          "undetermined": UNDETERMINED},
            "pii": {"sample_rows": sampled,
                    "row_rates": {kind: round(self.pii_rows[kind] / sampled, 4) if sampled else 0.0 for kind in self.pii_types},
                    "matches": {kind: self.pii_matches[kind] for kind in self.pii_types}},
            "exact_duplicates": {"rows": duplicates, "rate": round(duplicates / self.rows, 6) if self.rows else 0.0},
            "near_duplicates": None,
        }
