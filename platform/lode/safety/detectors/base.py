"""The one interface every safety detector implements: a batch of texts in, category scores out.

A detector is built once (models and lexicons loaded) and called with many texts at a time; it
returns, for each text, a `TextScores`: a score in [0, 1] for each category it found anything for
(absent = 0) and the findings behind them (with character spans where it has them, so PII and
blocklist hits can be redacted). `detect_all` runs several detectors over the same batch and merges
their results (the highest score per category wins; findings are concatenated)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# Lode's categories. Tenants' own blocklist entries and classifiers name one of these.
CATEGORIES = (
    "toxicity",       # insults, profanity, harassment (English model; Chinese lexicon "abuse" maps here too)
    "abuse",          # Chinese lexicon: abuse / insults
    "sexual",
    "violence",
    "self_harm",
    "illegal_goods",  # weapons, drugs and other contraband for sale
    "extremism",
    "pii",            # personal data (the dataset capability's detectors)
    "prompt_injection",  # attempts to override instructions / jailbreaks (prompts only)
    "blocklist",      # a tenant's own terms, patterns and example phrases
    "classifier",     # the tenant's own safety classifier (fine-tuned on its reviewers' decisions)
)


@dataclass(frozen=True)
class Finding:
    category: str
    score: float
    detector: str
    evidence: str = ""  # the matched term, pattern name, PII type or nearest example phrase
    start: int | None = None  # character span in the text, when the detector knows it
    end: int | None = None


@dataclass
class TextScores:
    scores: dict[str, float] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)
        if finding.score > self.scores.get(finding.category, 0.0):
            self.scores[finding.category] = finding.score

    def merge(self, other: "TextScores") -> None:
        for finding in other.findings:
            self.add(finding)
        for category, score in other.scores.items():  # scores without findings (a model's probability)
            if score > self.scores.get(category, 0.0):
                self.scores[category] = score


class Detector:
    """Subclasses set `name`, `categories` and `fast` (part of the fast path: no neural network
    beyond the profanity model's linear classifier) and implement `detect`."""

    name: str = ""
    categories: tuple[str, ...] = ()
    fast: bool = True

    def detect(self, texts: Sequence[str]) -> list[TextScores]:
        raise NotImplementedError


def detect_all(detectors: Sequence[Detector], texts: Sequence[str]) -> list[TextScores]:
    results = [TextScores() for _ in texts]
    for detector in detectors:
        for merged, found in zip(results, detector.detect(texts), strict=True):
            merged.merge(found)
    return results


# --- shared helpers (language share, term patterns) -----------------------------------------------

import re  # noqa: E402  (kept below the interface above, which is what readers come for)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def cjk_share(text: str) -> float:
    """The share of CJK ideographs among the text's letters (CJK and Latin); 0 for a text without letters."""
    cjk = len(_CJK.findall(text))
    if not cjk:
        return 0.0
    return cjk / (cjk + len(_LATIN.findall(text)))


def is_mostly_chinese(text: str) -> bool:
    return cjk_share(text) >= 0.5


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def trie_pattern(terms) -> str:
    """One regular expression matching any of the terms, with common prefixes shared (a trie
    written as nested groups), so that matching costs about the length of the text rather than
    the number of terms. A space in a term matches any run of whitespace. Longer terms win over
    their prefixes. Empty when there are no terms."""
    root: dict = {}
    for term in terms:
        if not term:
            continue
        node = root
        for char in term:
            node = node.setdefault(char, {})
        node[""] = {}  # end of a term

    def emit(node: dict) -> str:
        ends = "" in node
        branches = []
        singles = []
        for char in sorted(key for key in node if key):
            child = node[char]
            piece = r"\s+" if char == " " else re.escape(char)
            if list(child) == [""]:
                singles.append(piece)
            else:
                branches.append(piece + emit(child))
        if singles:
            if len(singles) == 1:
                branches.append(singles[0])
            elif all(len(s) == 1 for s in singles):
                branches.append("[" + "".join(singles) + "]")
            else:
                branches.extend(singles)
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 and not ends else "(?:" + "|".join(branches) + ")"
        if ends:
            body = ("(?:" + "|".join(branches) + ")?") if len(branches) > 1 else f"(?:{branches[0]})?"
        return body

    return emit(root) if root else ""
