"""English toxicity: alt-profanity-check's linear model (TF-IDF + calibrated linear SVM, shipped
inside its PyPI package) over the texts that are not mostly Chinese, in one call per batch.

The model reads English words only; a mostly-Chinese text (half or more of its letters CJK) is
left to the Chinese lexicon, which scores abuse as toxicity too.

The model scores words, not meaning: "kill", "die" and "shoot" weigh toward toxic wherever they
stand. Before scoring, two kinds of phrase are blanked out of the model's copy of the text:
everyday idioms ("kill the process", "shoot me an email", "to die for") and first-person
self-harm statements ("I want to kill myself"), which are the self_harm category's business, not
insults or threats against anyone."""
from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from .base import Detector, Finding, TextScores, is_mostly_chinese

_NOT_TOXIC = re.compile(
    r"\bkill(?:ed|ing|s)?\s+(?:the\s+|a\s+|this\s+|that\s+|all\s+|any\s+|every\s+|my\s+|your\s+|our\s+)?"
    r"(?:\w+\s+)?(?:process(?:es)?|task|job|server|app|application|tab|switch|session|thread|container|pod|query|"
    r"command|program|daemon|service|signal|feature|bill|deal|the\s+lights)s?\b|\bkill\s+-\d+|\bpkill\b|\bkillall\b|"
    r"\bkill(?:ed|ing)?\s+(?:it|time)\b|\bkill\s+two\s+birds\b|\bto\s+die\s+for\b|\bdressed\s+to\s+kill\b|"
    r"\bshoot\s+(?:me|us|him|her|them)\s+(?:an?|the|a\s+quick)\s+(?:email|e-mail|message|text|note|line|dm|call|invite)\b|"
    r"\bshoot(?:ing|s)?\s+(?:for|the\s+breeze)\b|"
    r"\bshoot(?:ing|s)?\s+(?:the|a|an|our|your|their|some)\s+(?:\w+\s+)?(?:wedding|photos?|video|film|scene|portrait|"
    r"commercial|footage|episode|campaign|hoops)\b|\bbreak\s+a\s+leg\b|\bscared\s+(?:me|him|her|us|them)\s+to\s+death\b|"
    r"\bdead(?:line|lock|\s+battery|\s+link|\s+sea)\b|\b(?:phone|battery|laptop)\s+(?:is|was)\s+dead\b|"
    r"\b(?:i|i'm|im|i am|i've|i have been)\s+(?:\w+\s+){0,3}?(?:kill(?:ing)?|hurt(?:ing)?|cut(?:ting)?|hang(?:ing)?)\s+"
    r"myself\b|\b(?:want|wanna|going|deserve)\s+to\s+die\b|\bway\s+to\s+die\b|\bend\s+my\s+life\b",
    re.IGNORECASE,
)

_LATIN_LETTER = re.compile(r"[A-Za-z]")

FINDING_FLOOR = 0.5  # below this the probability is kept as a score, without a finding
SCORE_FLOOR = 0.01  # below this nothing is reported (absent = 0)


@functools.cache
def _model():
    """The vectorizer and the classifier, loaded once per process (importing the package loads them)."""
    from profanity_check import profanity_check

    return profanity_check.vectorizer, profanity_check.model


def toxicity_probabilities(texts: Sequence[str]):
    """The model's probability of the toxic class for each text (numpy array)."""
    vectorizer, model = _model()
    return model.predict_proba(vectorizer.transform(texts))[:, 1]


class ProfanityDetector(Detector):
    name = "profanity"
    categories = ("toxicity",)
    fast = True

    def __init__(self):
        _model()

    def detect(self, texts: Sequence[str]) -> list[TextScores]:
        results = [TextScores() for _ in texts]
        # The model reads English words: a text without a Latin letter would only get its intercept.
        chosen = [index for index, text in enumerate(texts) if text and _LATIN_LETTER.search(text) and not is_mostly_chinese(text)]
        if not chosen:
            return results
        probabilities = toxicity_probabilities([_NOT_TOXIC.sub(" ", texts[index]) for index in chosen])
        for index, probability in zip(chosen, probabilities.tolist()):
            if probability < SCORE_FLOOR:
                continue
            score = round(probability, 4)
            if probability >= FINDING_FLOOR:
                results[index].add(Finding("toxicity", score, self.name, "profanity model"))
            else:
                results[index].scores["toxicity"] = score
        return results
