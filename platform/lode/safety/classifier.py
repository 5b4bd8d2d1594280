"""A tenant's own safety classifier as a detector: a sequence-classification fine-tune (trained on
an export of its reviewers' decisions) whose "unsafe" probability is the `classifier` category's
score. Loaded once per model from the artifact store (an adapter on its base, or a whole model)."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from .detectors.base import Detector, Finding, TextScores

MAX_LENGTH = 256
BATCH = 32
_loaded: dict[str, "ClassifierDetector"] = {}
_lock = threading.Lock()


class ClassifierDetector(Detector):
    name = "tenant_classifier"
    categories = ("classifier",)
    fast = False

    def __init__(self, model, tokenizer, *, unsafe_index: int, model_name: str):
        self.model = model
        self.tokenizer = tokenizer
        self.unsafe_index = unsafe_index
        self.model_name = model_name

    @classmethod
    def for_model(cls, spec: dict[str, Any]) -> "ClassifierDetector":
        with _lock:
            found = _loaded.get(spec["id"])
            if found is None:
                found = _loaded[spec["id"]] = cls._load(spec)
            return found

    @classmethod
    def _load(cls, spec: dict[str, Any]) -> "ClassifierDetector":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from workers.model_store import materialize_folder

        labels = spec["labels"]
        folder = materialize_folder(tenant_id=spec["tenant_id"], prefix=spec["prefix"], cache_subdir=f"tuned/{spec['id']}",
                                    manifest=spec["manifest"])
        if spec["is_adapter"]:
            from peft import PeftModel

            base = spec["base"]
            base_folder = materialize_folder(tenant_id=base.get("tenant_id"), prefix=base["prefix"],
                                             cache_subdir=f"serving/{base.get('tenant_id') or 'catalog'}/{base['name']}",
                                             manifest=base["manifest"])
            model = AutoModelForSequenceClassification.from_pretrained(
                base_folder, num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={name: index for index, name in enumerate(labels)}, ignore_mismatched_sizes=True)
            model = PeftModel.from_pretrained(model, folder)
            tokenizer = AutoTokenizer.from_pretrained(base_folder)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(folder)
            tokenizer = AutoTokenizer.from_pretrained(folder)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        return cls(model.eval(), tokenizer, unsafe_index=labels.index("unsafe"), model_name=spec["name"])

    def detect(self, texts: Sequence[str]) -> list[TextScores]:
        import torch

        results = []
        for start in range(0, len(texts), BATCH):
            batch = [text or " " for text in texts[start:start + BATCH]]
            encoded = self.tokenizer(batch, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            with torch.inference_mode():
                probabilities = torch.softmax(self.model(**encoded).logits.float(), dim=-1)[:, self.unsafe_index]
            for probability in probabilities.tolist():
                scores = TextScores()
                scores.add(Finding(category="classifier", score=float(probability), detector=self.name,
                                   evidence=self.model_name))
                results.append(scores)
        return results
