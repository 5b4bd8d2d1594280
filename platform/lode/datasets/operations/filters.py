"""Row filters: length, language and regular-expression tests that say whether a row stays."""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable

MAX_PATTERN_CHARS = 500
# Language identification looks at the start of the text: enough for a confident answer, and the
# cost stays bounded on long rows.
LANGUAGE_SAMPLE_CHARS = 2_000
UNDETERMINED = "und"

# A group holding a quantifier that is itself repeated ("(a+)+", "(\w*)*", "(a|aa){2,}") can take
# exponential time on a near-match; Python's re has no time limit, so such patterns are refused.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*(?:[+*]|\{\d+,\d*\})(?:[^()\\]|\\.)*\)(?:[+*]|\{\d+,\d*\})")


def length_ok(texts: Iterable[str], *, min_chars: int | None = None, max_chars: int | None = None) -> bool:
    """Whether the texts' total length in characters lies within [min_chars, max_chars]
    (either bound may be None)."""
    total = sum(len(text) for text in texts if text)
    if min_chars is not None and total < min_chars:
        return False
    return max_chars is None or total <= max_chars


@functools.cache
def _identifier():
    from langid.langid import LanguageIdentifier, model

    # Loading the model takes a few seconds; once per process.
    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


def language_of(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the text's language per langid.py's 97-language model,
    probabilities normalised over the languages; ("und", 0.0) for a text without letters."""
    sample = text[:LANGUAGE_SAMPLE_CHARS]
    if not any(char.isalpha() for char in sample):
        return UNDETERMINED, 0.0
    identifier = _identifier()
    # langid's own classify() multiplies the whole 7480x97 model by the feature vector (and
    # upcasts it to float64) on every call, ~5 ms; the feature vector has a few dozen non-zero
    # entries, so only those rows are needed. Same arithmetic, same answer, ~100x faster.
    features = identifier.instance2fv(sample)
    present = features.nonzero()[0]
    log_probs = features[present].astype("float64") @ identifier.nb_ptc[present] + identifier.nb_pc
    probs = identifier.norm_probs(log_probs)
    best = int(probs.argmax())
    return str(identifier.nb_classes[best]), float(probs[best])


def language_ok(text: str, *, allowed: set[str] | frozenset[str] | list[str], min_confidence: float = 0.0) -> bool:
    """Whether the text's language is one of `allowed` with at least `min_confidence`."""
    code, confidence = language_of(text)
    return code in allowed and confidence >= min_confidence


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re.Pattern:
    """The compiled pattern; ValueError for one that is too long, invalid, or prone to
    catastrophic backtracking."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("pattern: a non-empty regular expression")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"pattern: at most {MAX_PATTERN_CHARS} characters, not {len(pattern)}")
    if _NESTED_QUANTIFIER.search(pattern):
        raise ValueError("pattern: a repeated group that contains a repetition (like (a+)+) can take exponential "
                         "time; rewrite it without the nested quantifier")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"pattern: not a valid regular expression ({exc})") from None


def regex_ok(text: str, *, pattern: str, mode: str = "keep") -> bool:
    """mode "keep": whether the pattern occurs in the text (keep the rows that match);
    mode "drop": whether it does not (drop the rows that match)."""
    if mode not in ("keep", "drop"):
        raise ValueError("mode must be keep or drop")
    found = compile_pattern(pattern).search(text) is not None
    return found if mode == "keep" else not found
