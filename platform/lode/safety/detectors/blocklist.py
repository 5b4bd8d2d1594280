"""A tenant's blocklist: exact terms and regular expressions, each entry with a category
("blocklist" unless the tenant names one of Lode's categories).

Terms are matched by two trie regexes built once: Latin terms case-insensitively on word
boundaries ("ban" does not match "banana"), terms with CJK characters as substrings (Chinese has no
spaces to bound words). Each regex is compiled once; `blocklist_regex_check` is the validation the
service layer runs before storing one (length, compiling, nested quantifiers, empty matches)."""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from .base import CATEGORIES, Detector, Finding, TextScores, has_cjk, trie_pattern

DEFAULT_CATEGORY = "blocklist"
MAX_PATTERN_LENGTH = 500

logger = logging.getLogger(__name__)

try:  # Python 3.11 keeps the regex parser here; sre_parse is its deprecated alias
    from re import _constants as _sre_constants
    from re import _parser as _sre_parser
except ImportError:  # pragma: no cover
    import sre_constants as _sre_constants  # type: ignore[no-redef]
    import sre_parse as _sre_parser  # type: ignore[no-redef]

_REPEATS = {_sre_constants.MAX_REPEAT, _sre_constants.MIN_REPEAT}
if hasattr(_sre_constants, "POSSESSIVE_REPEAT"):
    _REPEATS.add(_sre_constants.POSSESSIVE_REPEAT)


def _children(op, av) -> list:
    """The sub-patterns nested in one parsed regex node."""
    name = str(op)
    if op in _REPEATS:
        return [av[2]]
    if name == "SUBPATTERN":
        return [av[3]]
    if name == "BRANCH":
        return list(av[1])
    if name in ("ASSERT", "ASSERT_NOT"):
        return [av[1]]
    if name == "ATOMIC_GROUP":
        return [av]
    if name == "GROUPREF_EXISTS":
        return [branch for branch in (av[1], av[2]) if branch is not None]
    return []


def _unbounded_or_many(av) -> bool:
    return av[1] > 1  # MAXREPEAT counts as > 1


def _nested_quantifier(parsed, inside_repeat: bool = False) -> bool:
    for op, av in parsed:
        if op in _REPEATS and _unbounded_or_many(av):
            if inside_repeat:
                return True
            if _nested_quantifier(av[2], True):
                return True
            continue
        for child in _children(op, av):
            if _nested_quantifier(child, inside_repeat):
                return True
    return False


def blocklist_regex_check(pattern: str) -> str | None:
    """Why a tenant's regular expression may not be used (a message naming the rule), or None when
    it may: at most 500 characters, compiles, no quantifier nested in another ("(a+)+", "(\\w*x)*",
    which backtrack exponentially), and does not match the empty string (it would flag every text)."""
    if not isinstance(pattern, str) or not pattern:
        return "the pattern is empty"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"the pattern is {len(pattern)} characters long; at most {MAX_PATTERN_LENGTH} are allowed"
    try:
        compiled = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"the pattern does not compile: {exc}"
    try:
        parsed = _sre_parser.parse(pattern)
    except Exception as exc:  # noqa: BLE001  (anything the parser raises means: refuse)
        return f"the pattern does not compile: {exc}"
    if _nested_quantifier(parsed):
        return "the pattern nests a quantifier inside another (like (a+)+), which can take exponential time"
    if compiled.search("") is not None:
        return "the pattern matches the empty string, so it would flag every text"
    return None


def _category(category: str | None) -> str:
    category = category or DEFAULT_CATEGORY
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}")
    return category


class BlocklistDetector(Detector):
    name = "blocklist"
    categories = CATEGORIES
    fast = True

    def __init__(self, *, terms: Sequence[tuple[str | None, str]] = (), patterns: Sequence[tuple[str | None, str]] = ()):
        self.latin: dict[str, list[tuple[str, str]]] = {}  # key -> [(category, term as written)]
        self.cjk: dict[str, list[tuple[str, str]]] = {}
        for category, term in terms:
            term = term.strip()
            if not term:
                continue
            table, key = (self.cjk, term.lower()) if has_cjk(term) else (self.latin, " ".join(term.lower().split()))
            entries = table.setdefault(key, [])
            if all(existing[0] != _category(category) for existing in entries):
                entries.append((_category(category), term))
        latin = trie_pattern(sorted(self.latin))
        self._latin = re.compile(rf"(?<!\w)(?:{latin})(?!\w)", re.IGNORECASE) if latin else None
        cjk = trie_pattern(sorted(self.cjk))
        self._cjk = re.compile(cjk, re.IGNORECASE) if cjk else None
        self.patterns: list[tuple[str, re.Pattern, str]] = []
        self.rejected: list[tuple[str, str]] = []  # (pattern, why): stored before a rule tightened
        for category, pattern in patterns:
            problem = blocklist_regex_check(pattern)
            if problem:
                logger.warning("blocklist pattern %r skipped: %s", pattern[:80], problem)
                self.rejected.append((pattern, problem))
                continue
            self.patterns.append((_category(category), re.compile(pattern), pattern))

    def detect(self, texts: Sequence[str]) -> list[TextScores]:
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> TextScores:
        result = TextScores()
        if not text:
            return result
        if self._latin is not None:
            for match in self._latin.finditer(text):
                for category, term in self.latin.get(" ".join(match.group().lower().split()), ()):
                    result.add(Finding(category, 1.0, self.name, term, match.start(), match.end()))
        if self._cjk is not None:
            # Overlapping CJK terms: restart one character after each hit's start.
            position = 0
            while True:
                match = self._cjk.search(text, position)
                if match is None:
                    break
                for category, term in self.cjk.get(match.group().lower(), ()):
                    result.add(Finding(category, 1.0, self.name, term, match.start(), match.end()))
                position = match.start() + 1
        for index, (category, compiled, source) in enumerate(self.patterns):
            for match in compiled.finditer(text):
                if match.end() == match.start():
                    continue
                result.add(Finding(category, 1.0, self.name, f"pattern {index + 1}: {source[:80]}", match.start(),
                                   match.end()))
        return result
