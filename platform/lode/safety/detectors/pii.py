"""Personal data: the dataset capability's detectors (`lode.datasets.operations.pii`), each match
a finding with its span and its type as evidence, so that a policy can redact exactly it.

`pii_find` bounds its matches with `\\w` and `str.isalnum()`, which CJK characters satisfy, so a
number or address written right against Chinese text ("手机号是13812345678") would be skipped. The
detector scans a copy of the text in which every CJK character and full-width punctuation mark is
replaced by a space: one character for one, so the spans stay those of the original text (no
e-mail, phone, card, IBAN, IP or resident-ID number contains such a character)."""
from __future__ import annotations

import re
from collections.abc import Sequence

from lode.datasets.operations.pii import TYPES, pii_find

from .base import Detector, Finding, TextScores, has_cjk

# Every type is confirmed by a checksum, a numbering plan or a parser before it is reported; a
# phone number is the least certain (a valid-looking number in running text may be an id).
TYPE_SCORES = {"cn_id": 1.0, "iban": 1.0, "card": 1.0, "email": 1.0, "ip": 0.9, "phone": 0.9}
# CJK punctuation, ideographs and full-width punctuation (not full-width digits or letters).
_CJK_AND_FULLWIDTH = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff01-\uff0f\uff1a-\uff20"
                                r"\uff3b-\uff40\uff5b-\uff65]")


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
            scanned = _CJK_AND_FULLWIDTH.sub(" ", text) if text and has_cjk(text) else text
            for match in pii_find(scanned, types=self.types):
                result.add(Finding("pii", TYPE_SCORES[match.type], self.name, match.type, match.start, match.end))
            results.append(result)
        return results
