"""Personal data: the dataset capability's detectors (`lode.datasets.operations.pii`), each match
a finding with its span and its type as evidence, so that a policy can redact exactly it (numbers
written right against Chinese text included: `pii_find` reads CJK characters as spaces)."""
from __future__ import annotations

from collections.abc import Sequence

from lode.datasets.operations.pii import TYPES, pii_find

from .base import Detector, Finding, TextScores

# Every type is confirmed by a checksum, a numbering plan or a parser before it is reported; a
# phone number is the least certain (a valid-looking number in running text may be an id).
TYPE_SCORES = {"cn_id": 1.0, "iban": 1.0, "card": 1.0, "email": 1.0, "ip": 0.9, "phone": 0.9}


class PiiDetector(Detector):
    name = "pii"
    categories = ("pii",)
    fast = True

    def __init__(self, *, types: Sequence[str] | None = None):
        self.types = tuple(types) if types is not None else TYPES

    def detect(self, texts: Sequence[str]) -> list[TextScores]:
        results = []
        for text in texts:
            result = TextScores()
            for match in pii_find(text, types=self.types):
                result.add(Finding("pii", TYPE_SCORES[match.type], self.name, match.type, match.start, match.end))
            results.append(result)
        return results
