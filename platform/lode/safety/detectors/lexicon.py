"""The lexicon detector: the project's term lists (lexicons/zh, lexicons/en) plus a tenant's own
terms, scored with a little context so that news, medical and legal text is not flagged.

Chinese is matched on jieba tokens: every Chinese term is added to jieba's dictionary, so a
multi-character term segments as one token, and a term matches only where it starts and ends on
token boundaries ("杀人" does not match inside "抹杀/人性"). Segmenting is the expensive part, so a
text is segmented only when one trie regex over all Chinese terms finds a candidate in it, and
then only SEGMENT_CONTEXT characters either side of each candidate, inside its clause. English
terms are matched case-insensitively on word boundaries by one trie regex.

Score of a hit = the term's weight (1 unless the lexicon says lower), + INTENT_BONUS when the text
carries an intent cue ("how to", "where can I buy", "教我", "出售", "我要"), - DESCRIPTIVE_PENALTY when
it carries a descriptive cue ("patient", "defendant", "据报道", "患者"), clipped to [0, 1]. A term of
weight 0.4 ("cocaine", "炸弹") therefore stays under the default threshold alone and crosses it
with intent; a weight-1 term ("kill myself", "操你妈") stays over it even in descriptive text.
Chinese abuse, and Chinese threats addressed to "你", also score as toxicity (the English
toxicity model does not read Chinese).

Acts (`lexicons/<language>/acts.txt`) are patterns for what single terms cannot list: a harmful
verb and the one it is done to ("strangle my neighbour", "score some molly", "掐死他"), matched
on the raw text (English case-insensitively on word boundaries), scored like terms. An act is
tried only on a text that contains one of the literals it starts with (one trie regex of them all
finds those; `Acts`): the expanded acts are long alternations, which Python's regex engine tries
at every position of a text, and ran at ~300 µs a text before the prefilter."""
from __future__ import annotations

import functools
import logging
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .base import CATEGORIES, Detector, Finding, TextScores, has_cjk, trie_pattern

LEXICON_DIR = Path(__file__).resolve().parents[1] / "lexicons"
ZH_CATEGORIES = ("abuse", "sexual", "violence", "self_harm", "illegal_goods", "extremism")
EN_CATEGORIES = ("sexual", "violence", "self_harm", "illegal_goods", "extremism")
TENANT_WEIGHT = 1.0  # a tenant's own term is harmful on its own: that is why they added it
INTENT_BONUS = 0.45
DESCRIPTIVE_PENALTY = 0.35
MAX_TOKENS_PER_TERM = 4  # a term may cover up to this many jieba tokens
SEGMENT_CONTEXT = 8

# Intent: the writer wants to do, get or teach the thing. Some cues matter for one category only.
_EN_INTENT = re.compile(
    r"\b(?:how (?:do|can|could|would|should|to) (?:i|we|you|one)?|how to|where (?:can|do|could|to) (?:i|we|you)?\s*"
    r"(?:buy|get|find|order|score)|teach me|show me how|tell me how|step[- ]by[- ]step|instructions (?:for|to)|"
    r"i (?:want|need|plan|intend) to|i'?m (?:going|gonna|about) to|i am (?:going|about) to|i'?ll|i will|gonna|"
    r"let'?s|help me|recipe for|dm me|hmu|for sale|selling|buy(?:ing)?|sell|cheap|discreet|stealth shipping|"
    r"ships? (?:fast|worldwide|overnight)|telegram|wickr|join us|join the|we must|we need to|should all|"
    r"i (?:just )?(?:feel|think) (?:like|about)|thinking (?:about|of)|i'?ve been (?:thinking|planning)|"
    r"(?:best|easiest|quickest|fastest|cheapest|safest) way to|looking for a plug|plug for|hook me up|who sells|"
    r"anyone selling|we should|support (?:the|our)|send money|donate to|want to|wanna)\b",
    re.IGNORECASE,
)
_ZH_INTENT = re.compile(
    r"怎么|怎样|如何|哪里(?:能|可以|有)?(?:买|弄|搞|找)|哪儿|教我|教程|步骤|方法|配方|求购|出售|有货|现货|价格|多少钱|"
    r"联系|加微|加V|加v|微信|私聊|私信|包邮|货到付款|我要|我想|我会|我准备|我打算|老子|你等着|信不信|给我|帮我|"
    r"一起去|号召|加入|必须|应该|求个|求一个|求资源|有没有"
)
# Descriptive: medicine, law, news, history, research, prevention.
_EN_DESCRIPTIVE = re.compile(
    r"\b(?:patients?|doctors?|nurses?|hospital|clinic|clinical|diagnos\w*|treated|treatment|surgery|symptoms?|"
    r"therap\w+|prevention|hotline|helpline|crisis line|lifeline|awareness|research\w*|study|studies|statistics|"
    r"reported|reports?|according to|police|officers?|arrested|charged|defendant|prosecut\w+|court|judge|jury|"
    r"trial|convicted|sentenced|verdict|lawsuit|legislation|illegal to|history|historians?|century|"
    r"novel|film|movie|documentary|museum|article|news|journalists?|victims?|survivors?|died by|seized|"
    r"crackdown|counterterrorism|de-?radicali\w+|screening|addiction|rehab\w*|recovery|withdrawal|officials|"
    r"authorities|warned|dispos(?:e|al)|take-back)\b",
    re.IGNORECASE,
)
_ZH_DESCRIPTIVE = re.compile(
    r"患者|病人|医生|医院|治疗|诊断|症状|抢救|警方|公安|民警|据报道|报道|新闻|记者|法院|被告|判处|判决|指控|涉嫌|"
    r"犯罪嫌疑人|检察|刑法|法律|依法|打击|禁毒|缉毒|查获|历史|战争|世纪|年代|纪念|研究|调查|统计|预防|干预|热线|"
    r"心理咨询|科普|小说|电影|剧情|纪录片|博物馆|遇难|受害者|戒毒|康复|严禁|违法|举报|分析|论文|学者|专家|报告|课程"
)
_ZH_SECOND_PERSON = re.compile(r"你|妳|您")
_EN_YOU = re.compile(r"\b(?:you|your|you're|youre|ya|u)\b", re.IGNORECASE)
# A threat at the reader: the writer's future act and a "you" ("I'll find you", "I'm coming for you").
_EN_THREAT_AT_YOU = re.compile(r"\b(?:i'?ll|i will|i'?m going to|i am going to|i'?m gonna|gonna|i'?m coming)\b.{0,60}?"
                               r"\b(?:you|your|ya|u)\b", re.IGNORECASE)
_ZH_THREAT_AT_YOU = re.compile(r"(?:我|老子).{0,12}?你|你等着|信不信")
# Self-harm is about the writer: a first-person text is a cue for that category only.
_EN_FIRST_PERSON = re.compile(r"\b(?:i|i'm|im|i've|i'd|me|my|myself)\b", re.IGNORECASE)
_ZH_FIRST_PERSON = re.compile(r"我")
_ZH_CLAUSE_BREAK = re.compile(r"[。！？!?；;\n]")
# A numeric term ("1488") counts only standing alone, not as a group of a longer number ("4539 1488 0343").
_DIGIT_GROUP_BEFORE = re.compile(r"\d[\s.\-/]?$")
_DIGIT_GROUP_AFTER = re.compile(r"^[\s.\-/]?\d")


@dataclass(frozen=True)
class Term:
    category: str
    weight: float
    also: str = ""  # a second category the hit scores in (a hate slogan is toxicity as well as extremism)


def lexicon_load(language: str, category: str) -> list[tuple[str, float, str]]:
    """(term, weight, also-category) of one shipped lexicon file (lines `term|weight|also`, the
    last two optional); [] when the file does not exist."""
    path = LEXICON_DIR / language / f"{category}.txt"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        term, _, rest = line.partition("|")
        weight, _, also = rest.partition("|")
        out.append((term.strip(), float(weight) if weight.strip() else 1.0, also.strip()))
    return out


@dataclass(frozen=True)
class Act:
    term: Term
    pattern: re.Pattern


_MACRO = re.compile(r"^@(\w+)\s*([=~])\s*(.+)$")
_MACRO_USE = re.compile(r"\{(\w+)\}")


def _present_forms(verb: str) -> list[str]:
    """verb, verbs/verbes, verbing (with the last consonant doubled and a final e dropped as
    alternatives: a form that is not English never matches anything); a phrase inflects its first
    word ("run over" -> "running over")."""
    head, _, tail = verb.partition(" ")
    forms = {head, head + "s", head + "es", head + "ing", head + head[-1] + "ing"}
    if head.endswith("e"):
        forms.add(head[:-1] + "ing")
    if head.endswith("y"):
        forms.add(head[:-1] + "ies")
    return sorted((f"{form} {tail}" if tail else form) for form in forms)


def _leading_literals(pattern: str, lists: dict[str, list[str]]) -> list[str] | None:
    """Literal prefixes one of which every match of the (unexpanded) pattern starts with, for the
    prefilter; None when the pattern's start is not simple enough to tell (that act always runs)."""
    depth = 0
    for char in pattern:  # an alternation at the top level: any branch may start the match
        depth += (char == "(") - (char == ")")
        if char == "|" and depth == 0:
            return None
    found = re.match(r"\{(\w+)\}(?![?*])", pattern)
    if found:
        alternatives = [part for item in lists.get(found.group(1), []) for part in item.split("|")]
    elif pattern.startswith("(?:"):
        depth, end = 0, -1
        for index, char in enumerate(pattern):
            depth += char == "("
            depth -= char == ")"
            if depth == 0:
                end = index
                break
        inside = pattern[3:end]
        if end < 0 or "(" in inside or pattern[end + 1:end + 2] in ("?", "*", "{"):
            return None
        if re.fullmatch(r"\{\w+\}", inside):
            return _leading_literals(inside, lists)
        alternatives = inside.split("|")
    else:
        alternatives = [pattern]
    out = []
    for alternative in alternatives:
        literal = re.match(r"[^\W\d_]+", alternative)
        if not literal:
            return None
        word = literal.group().lower()
        if alternative[literal.end():literal.end() + 1] in ("?", "*", "{"):  # its last letter is optional
            word = word[:-1]
            if not word:
                return None
        # a final e or y changes in the -ing and -ies forms ("strangle" -> "strangling")
        out.append(word[:-1] if len(word) > 3 and word[-1] in "ey" and word.isascii() else word)
    return out


def acts_load(language: str) -> list[tuple[str, float, str]]:
    """(category, weight, regular expression) of a language's shipped acts file, its {NAME} lists
    expanded; [] when the file does not exist. A malformed line raises ValueError naming it."""
    return [(category, weight, pattern) for category, weight, pattern, _ in _acts_read(language)]


def _acts_read(language: str) -> list[tuple[str, float, str, list[str] | None]]:
    path = LEXICON_DIR / language / "acts.txt"
    if not path.exists():
        return []
    macros: dict[str, str] = {}
    lists: dict[str, list[str]] = {}

    def expand(text: str, number: int) -> str:
        def one(match: re.Match) -> str:
            if match.group(1) not in macros:
                raise ValueError(f"{path.name} line {number}: unknown list {{{match.group(1)}}}")
            return macros[match.group(1)]

        return _MACRO_USE.sub(one, text)

    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        macro = _MACRO.match(line)
        if macro:
            name, kind, body = macro.groups()
            if kind == "~":
                items = [form for verb in body.split(",") for form in _present_forms(verb.strip())]
            elif "|" in body and "," not in body:  # a Chinese list is written as one alternation
                items = [body]
            else:
                items = [item.strip() for item in body.split(",")]
            lists[name] = [item for item in items if item]
            macros[name] = "(?:" + "|".join(expand(item, number) for item in lists[name]) + ")"
            continue
        category, weight, pattern = (part.strip() for part in line.split("|", 2))
        if category not in CATEGORIES:
            raise ValueError(f"{path.name} line {number}: unknown category {category!r}")
        expanded = expand(pattern, number).replace(" ", r"\s+")
        re.compile(expanded)
        out.append((category, float(weight), expanded, _leading_literals(pattern, lists)))
    return out


@dataclass(frozen=True)
class Acts:
    """A language's compiled acts and their prefilter: one trie regex of the literals the acts
    start with (a match of a long literal also stands for the shorter ones it starts with); an act
    runs on a text only where one of its literals occurs, or always when it has none."""
    acts: tuple[Act, ...]
    prefilter: re.Pattern | None  # over the lower-cased text: IGNORECASE made it 7x slower
    by_literal: dict[str, frozenset[int]]
    always: frozenset[int]

    def candidates(self, text: str) -> list[Act]:
        chosen = set(self.always)
        if self.prefilter is not None:
            for match in self.prefilter.finditer(text.lower()):
                chosen |= self.by_literal.get(match.group(), frozenset())
        return [self.acts[index] for index in sorted(chosen)]


@functools.cache
def _acts(language: str) -> Acts:
    flags = re.IGNORECASE if language == "en" else 0
    bound = (r"(?<![\w'])(?:", r")(?![\w'])") if language == "en" else ("(?:", ")")
    acts, literals, always = [], {}, set()
    for index, (category, weight, pattern, leading) in enumerate(_acts_read(language)):
        acts.append(Act(Term(category, weight), re.compile(bound[0] + pattern + bound[1], flags)))
        if leading is None:
            always.add(index)
        for literal in leading or ():
            literals.setdefault(literal, set()).add(index)
    by_literal = {literal: frozenset(index for shorter, indices in literals.items() if literal.startswith(shorter)
                                     for index in indices) for literal in literals}
    # English acts start on a word boundary, so their literals do too
    start = r"\b" if language == "en" else ""
    prefilter = re.compile(start + "(?:" + trie_pattern(sorted(literals)) + ")") if literals else None
    return Acts(tuple(acts), prefilter, by_literal, frozenset(always))


# --- jieba: one segmenter per process ------------------------------------------------------------

_segmenter_lock = threading.Lock()
_segmenter_words: set[str] = set()


def _cache_dir() -> Path:
    """Where jieba keeps its prefix-dictionary cache: the project's state folder when Django is
    configured, else a folder of its own under the system temporary directory."""
    folder = None
    try:
        from django.conf import settings

        if settings.configured:
            folder = Path(settings.STATE_DIR) / "jieba"
    except Exception:  # Django missing or its settings broken: detectors still work without it
        folder = None
    if folder is None:
        folder = Path(tempfile.gettempdir()) / "lode-jieba"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="lode-jieba-"))
    return folder


@functools.cache
def segmenter():
    """The process's jieba tokenizer, initialised once (its dictionary cache in _cache_dir())."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    tokenizer.tmp_dir = str(_cache_dir())
    tokenizer.initialize()
    return tokenizer


def segmenter_add_words(words: Iterable[str]) -> None:
    """Adds terms to the shared segmenter's dictionary so that each segments as one token. Tenants'
    terms go into the same process-wide dictionary: that only changes where jieba cuts, never
    what another tenant's detector matches (each detector matches its own term table)."""
    tokenizer = segmenter()
    with _segmenter_lock:
        for word in words:
            if word not in _segmenter_words:
                # A frequency high enough that jieba keeps the term whole against its own words.
                tokenizer.add_word(word, freq=max(tokenizer.suggest_freq(word, tune=False), 1000))
                _segmenter_words.add(word)


def segment(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) for the text; no HMM (it would merge unknown characters into new words
    across a term's boundary)."""
    out = []
    position = 0
    for token in segmenter().cut(text, HMM=False):
        out.append((token, position, position + len(token)))
        position += len(token)
    return out


# --- the detector ------------------------------------------------------------------------------------


def _score(weight: float, cue: bool, descriptive: bool) -> float:
    """A hit's score: the term's weight, + INTENT_BONUS with a cue, - DESCRIPTIVE_PENALTY in
    descriptive text, clipped to [0, 1]."""
    value = weight + INTENT_BONUS * cue - DESCRIPTIVE_PENALTY * descriptive
    return 0.0 if value < 0 else 1.0 if value > 1 else round(value, 4)


class LexiconDetector(Detector):
    name = "lexicon"
    categories = tuple(dict.fromkeys(ZH_CATEGORIES + EN_CATEGORIES + ("toxicity",)))
    fast = True

    def __init__(self, *, extra_terms: Sequence[tuple[str, str]] = ()):
        self.zh: dict[str, list[Term]] = {}
        self.en: dict[str, list[Term]] = {}
        for category in ZH_CATEGORIES:
            for term, weight, also in lexicon_load("zh", category):
                self._add(self.zh, term, Term(category, weight, also))
        for category in EN_CATEGORIES:
            for term, weight, also in lexicon_load("en", category):
                self._add(self.en, self._en_key(term), Term(category, weight, also))
        for category, term in extra_terms:
            if category not in CATEGORIES:
                raise ValueError(f"unknown category {category!r} for term {term!r}")
            term = term.strip()
            if not term:
                continue
            if has_cjk(term):
                self._add(self.zh, term, Term(category, TENANT_WEIGHT))
            else:
                self._add(self.en, self._en_key(term), Term(category, TENANT_WEIGHT))
        segmenter_add_words(self.zh)
        zh_pattern = trie_pattern(sorted(self.zh))
        self._zh_candidates = re.compile(zh_pattern) if zh_pattern else None
        en_pattern = trie_pattern(sorted(self.en))
        self._en_terms = re.compile(rf"(?<![\w'])(?:{en_pattern})(?![\w'])", re.IGNORECASE) if en_pattern else None

    @staticmethod
    def _en_key(term: str) -> str:
        return " ".join(term.lower().split())

    @staticmethod
    def _add(table: dict[str, list[Term]], term: str, entry: Term) -> None:
        entries = table.setdefault(term, [])
        entries[:] = [e for e in entries if e.category != entry.category] + [entry]

    def detect(self, texts: Sequence[str]) -> list[TextScores]:
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> TextScores:
        result = TextScores()
        if not text:
            return result
        hits: list[tuple[Term, re.Match]] = []
        if self._en_terms is not None:
            for match in self._en_terms.finditer(text):
                if match.group().isdigit() and (
                        _DIGIT_GROUP_BEFORE.search(text, 0, match.start()) or
                        _DIGIT_GROUP_AFTER.match(text[match.end():match.end() + 2])):
                    continue
                hits += [(entry, match) for entry in self.en.get(self._en_key(match.group()), ())]
        for act in _acts("en").candidates(text):
            hits += [(act.term, match) for match in act.pattern.finditer(text)]
        if hits:
            intent = _EN_INTENT.search(text) is not None
            descriptive = _EN_DESCRIPTIVE.search(text) is not None
            threat_at_you = _EN_THREAT_AT_YOU.search(text) is not None
            first_person = _EN_FIRST_PERSON.search(text) is not None
            for entry, match in hits:
                cue = intent or (first_person and entry.category == "self_harm")
                score = _score(entry.weight, cue, descriptive)
                if score > 0:
                    addressed = threat_at_you or _EN_YOU.search(match.group()) is not None
                    self._hit(result, entry, score, match.group(), match.start(), match.end(), addressed)
        if has_cjk(text):
            terms = self._zh_candidates is not None and self._zh_candidates.search(text) is not None
            acts = _acts("zh").candidates(text)
            if terms or acts:
                self._zh(text, result, terms, acts)
        return result

    def _zh(self, text: str, result: TextScores, terms: bool, acts: list[Act]) -> None:
        intent = _ZH_INTENT.search(text) is not None
        descriptive = _ZH_DESCRIPTIVE.search(text) is not None
        breaks = [0] + [m.end() for m in _ZH_CLAUSE_BREAK.finditer(text)] + [len(text)]
        if terms:
            self._zh_terms(text, result, intent, descriptive, breaks)
        for act in acts:
            for match in act.pattern.finditer(text):
                index = self._clause_index(breaks, match.start())
                clause = text[breaks[index]:breaks[index + 1]]
                cue = intent or (act.term.category == "self_harm" and _ZH_FIRST_PERSON.search(clause) is not None)
                score = _score(act.term.weight, cue, descriptive)
                if score > 0:
                    addressed = _ZH_THREAT_AT_YOU.search(clause) is not None or "你" in match.group()
                    self._hit(result, act.term, score, match.group(), match.start(), match.end(), addressed)

    def _zh_terms(self, text: str, result: TextScores, intent: bool, descriptive: bool, breaks: list[int]) -> None:
        seen: set[tuple[int, int]] = set()
        # Segment only a window of SEGMENT_CONTEXT characters either side of each candidate, inside
        # its clause (jieba's choice around a term depends on its neighbours, not on far-off text).
        windows: list[list[int]] = []  # [start, end, clause start, clause end]
        for candidate in self._zh_candidates.finditer(text):
            index = self._clause_index(breaks, candidate.start())
            start = max(breaks[index], candidate.start() - SEGMENT_CONTEXT)
            end = min(breaks[index + 1], candidate.end() + SEGMENT_CONTEXT)
            if windows and windows[-1][2] == breaks[index] and start <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], end)
            else:
                windows.append([start, end, breaks[index], breaks[index + 1]])
        for start, end, clause_start, clause_end in windows:
            tokens = segment(text[start:end])
            clause = text[clause_start:clause_end]
            # An insult aimed at someone ("你这个废物") is abuse; the same word alone may not be ("废物利用").
            abuse_intent = intent or _ZH_SECOND_PERSON.search(clause) is not None
            threat_at_you = _ZH_THREAT_AT_YOU.search(clause) is not None
            first_person = _ZH_FIRST_PERSON.search(clause) is not None
            for first in range(len(tokens)):
                joined = ""
                for last in range(first, min(first + MAX_TOKENS_PER_TERM, len(tokens))):
                    joined += tokens[last][0]
                    entries = self.zh.get(joined)
                    if not entries:
                        continue
                    span = (start + tokens[first][1], start + tokens[last][2])
                    if span in seen:
                        continue
                    seen.add(span)
                    for entry in entries:
                        cue = (abuse_intent if entry.category == "abuse" else
                               intent or first_person if entry.category == "self_harm" else intent)
                        score = _score(entry.weight, cue, descriptive)
                        if score > 0:
                            addressed = threat_at_you or "你" in joined
                            self._hit(result, entry, score, joined, span[0], span[1], addressed)

    def _hit(self, result: TextScores, entry: Term, score: float, term: str, start: int, end: int,
             addressed: bool) -> None:
        result.add(Finding(entry.category, score, self.name, term, start, end))
        # Toxicity covers insults and threats aimed at someone: Chinese abuse, a violent term in a
        # text addressed to "you", and terms the lexicon marks (hate slogans).
        if entry.category == "abuse" or (entry.category == "violence" and addressed) or entry.also == "toxicity":
            result.add(Finding("toxicity", score, self.name, term, start, end))
        elif entry.also:
            result.add(Finding(entry.also, score, self.name, term, start, end))

    @staticmethod
    def _clause_index(breaks: list[int], position: int) -> int:
        low, high = 0, len(breaks) - 2
        while low < high:  # the last clause whose start is <= position
            middle = (low + high + 1) // 2
            if breaks[middle] <= position:
                low = middle
            else:
                high = middle - 1
        return low
