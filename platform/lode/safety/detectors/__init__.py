"""Lode's content-safety detectors and the sets a tenant's checks run.

`detectors_for(rules, full=...)` gives the fast set (profanity model, lexicons with the tenant's
terms, PII, prompt injection, the tenant's blocklist) and, with `full`, the semantic blocklist
(MiniLM embeddings). Built sets are cached per rules content; the models behind them are loaded
once per process and shared. `DEFAULT_THRESHOLDS` are the per-category scores at which a category
counts as detected; the evaluation test measures precision and recall at exactly these (see
README.md)."""
from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from .base import CATEGORIES, Detector, Finding, TextScores, detect_all

__all__ = ("CATEGORIES", "DEFAULT_THRESHOLDS", "Detector", "Finding", "TenantRules", "TextScores", "detect_all",
           "detectors_for", "predicted_categories", "warm_up")

# The score at which each category counts as detected (the policy layer's default thresholds).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "toxicity": 0.5,
    "abuse": 0.6,
    "sexual": 0.6,
    "violence": 0.6,
    "self_harm": 0.6,
    "illegal_goods": 0.6,
    "extremism": 0.6,
    "pii": 0.5,
    "prompt_injection": 0.5,
    "blocklist": 0.5,
    "classifier": 0.5,  # a tenant's own classifier (lode.safety.classifier): its probability
}

_CACHE_SIZE = 256
# Categories the lexicon scores with context (a tenant's term in one of them extends the lexicon);
# a term in any other category goes to the exact-match blocklist.
_LEXICON_CATEGORIES = ("toxicity", "abuse", "sexual", "violence", "self_harm", "illegal_goods", "extremism")


@dataclass
class TenantRules:
    """A tenant's own additions: terms and regexes as (category, text), example phrases for the
    semantic blocklist as (category, phrase, cosine threshold). Category None means "blocklist"."""

    terms: list[tuple[str | None, str]] = field(default_factory=list)
    patterns: list[tuple[str | None, str]] = field(default_factory=list)
    phrases: list[tuple[str | None, str, float | None]] = field(default_factory=list)

    def content_hash(self) -> str:
        payload = json.dumps([list(map(list, self.terms)), list(map(list, self.patterns)), list(map(list, self.phrases))],
                             ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


_cache: OrderedDict[tuple[str, bool], list[Detector]] = OrderedDict()
_cache_lock = threading.Lock()
_shared: dict[str, Detector] = {}
_shared_lock = threading.Lock()


def _shared_detector(name: str) -> Detector:
    """The detectors that hold no tenant data, one instance per process."""
    with _shared_lock:
        if name not in _shared:
            if name == "profanity":
                from .profanity import ProfanityDetector

                _shared[name] = ProfanityDetector()
            elif name == "pii":
                from .pii import PiiDetector

                _shared[name] = PiiDetector()
            elif name == "injection":
                from .injection import InjectionDetector

                _shared[name] = InjectionDetector()
            elif name == "lexicon":
                from .lexicon import LexiconDetector

                _shared[name] = LexiconDetector()
            else:  # pragma: no cover
                raise KeyError(name)
        return _shared[name]


def _build(rules: TenantRules | None, full: bool) -> list[Detector]:
    lexicon_terms = [(c, t) for c, t in (rules.terms if rules else ()) if c in _LEXICON_CATEGORIES]
    blocklist_terms = [(c, t) for c, t in (rules.terms if rules else ()) if c not in _LEXICON_CATEGORIES]
    detectors = [_shared_detector("profanity")]
    if lexicon_terms:
        from .lexicon import LexiconDetector

        detectors.append(LexiconDetector(extra_terms=lexicon_terms))
    else:
        detectors.append(_shared_detector("lexicon"))
    detectors += [_shared_detector("pii"), _shared_detector("injection")]
    if rules and (blocklist_terms or rules.patterns):
        from .blocklist import BlocklistDetector

        detectors.append(BlocklistDetector(terms=blocklist_terms, patterns=rules.patterns))
    if full and rules and rules.phrases:
        from .semantic import SemanticDetector

        detectors.append(SemanticDetector(phrases=rules.phrases))
    return detectors


def detectors_for(rules: TenantRules | None, *, full: bool) -> list[Detector]:
    """The detectors a tenant's check runs: the fast set, plus the semantic blocklist when `full`
    and the tenant has example phrases. Cached per rules content (rules change rarely)."""
    key = (rules.content_hash() if rules else "", full)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return list(found)
    built = _build(rules, full)
    with _cache_lock:
        _cache[key] = built
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return list(built)


def predicted_categories(scores: TextScores, thresholds: dict[str, float] | None = None) -> set[str]:
    """The categories whose score reaches its threshold (DEFAULT_THRESHOLDS unless given)."""
    thresholds = thresholds or DEFAULT_THRESHOLDS
    return {category for category, score in scores.scores.items() if score >= thresholds.get(category, 0.5)}


def warm_up(*, full: bool = True) -> None:
    """Loads what the first check would otherwise wait for: the profanity model, jieba with the
    lexicons, and (full) MiniLM."""
    for name in ("profanity", "lexicon", "pii", "injection"):
        _shared_detector(name)
    from lode.datasets.operations.pii import pii_find

    pii_find("+1 415 555 0100")  # loads phonenumbers' metadata
    if full:
        from .semantic import embed

        embed(["warm up"])
