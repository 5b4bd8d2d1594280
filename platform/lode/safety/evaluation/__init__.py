"""Lode's labeled safety evaluation set and the measurement the detectors are held to.

`eval_set.jsonl`: one text a line, `{"text", "lang": "en"|"zh", "labels": [categories] (empty =
benign), "kind", "split": "dev"|"holdout"|"holdout2"}`. The dev split was written alongside the
detectors' rules; the holdout split was written after they were frozen and never used to tune them
(some of its misses, named in detectors/README.md, were known when the acts were written); the
holdout2 split (violence, self-harm, sexual and illegal-goods texts and look-alike hard negatives)
was written after the acts (lexicons/*/acts.txt) were frozen, and measured once.
`tenant_rules.json`: the evaluation tenant's terms, patterns and example phrases (the rows labeled
`blocklist`). A category counts as predicted for a text when its score reaches its threshold
(`DEFAULT_THRESHOLDS` unless given).

    .venv/bin/python -m lode.safety.evaluation      # prints the table of detectors/README.md
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
KINDS = ("toxic", "harmful", "pii", "injection", "blocklist", "benign", "hard_negative")
SPLITS = ("dev", "holdout", "holdout2")
# The README's floors and its "precision"/"recall" columns are over these splits (the 671 texts the
# floors were set on); holdout2 is reported on its own.
FLOOR_SPLITS = ("dev", "holdout")


def eval_rows() -> list[dict]:
    with open(FOLDER / "eval_set.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def eval_rules():
    from lode.safety.detectors import TenantRules

    config = json.loads((FOLDER / "tenant_rules.json").read_text(encoding="utf-8"))
    return TenantRules(terms=[tuple(item) for item in config["terms"]], patterns=[tuple(item) for item in config["patterns"]],
                       phrases=[tuple(item) for item in config["phrases"]])


@dataclass(frozen=True)
class Metrics:
    category: str
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0


def category_metrics(rows: list[dict], predictions: list[set[str]], categories) -> dict[str, Metrics]:
    out = {}
    for category in categories:
        tp = fp = fn = 0
        for row, predicted in zip(rows, predictions, strict=True):
            gold = category in row["labels"]
            hit = category in predicted
            tp += gold and hit
            fp += hit and not gold
            fn += gold and not hit
        out[category] = Metrics(category, tp, fp, fn)
    return out


def hard_negative_false_positive_rate(rows: list[dict], predictions: list[set[str]]) -> float:
    """The share of hard negatives (benign texts that look harmful) with any predicted category."""
    flagged = [bool(predicted) for row, predicted in zip(rows, predictions) if row["kind"] == "hard_negative"]
    return sum(flagged) / len(flagged) if flagged else 0.0


def evaluate(thresholds: dict[str, float] | None = None):
    """Runs the full detector set with the evaluation tenant's rules over the whole set: (rows,
    predicted categories per row)."""
    from lode.safety.detectors import DEFAULT_THRESHOLDS, detect_all, detectors_for, predicted_categories

    rows = eval_rows()
    results = detect_all(detectors_for(eval_rules(), full=True), [row["text"] for row in rows])
    return rows, [predicted_categories(result, thresholds or DEFAULT_THRESHOLDS) for result in results]


def main() -> None:
    from lode.safety.detectors import DEFAULT_THRESHOLDS

    rows, predictions = evaluate()
    categories = sorted({label for row in rows for label in row["labels"]})
    floored = [(row, predicted) for row, predicted in zip(rows, predictions) if row["split"] in FLOOR_SPLITS]
    overall = category_metrics([r for r, _ in floored], [p for _, p in floored], categories)
    splits = {}
    for split in SPLITS[1:]:
        held = [(row, predicted) for row, predicted in zip(rows, predictions) if row["split"] == split]
        splits[split] = (held, category_metrics([r for r, _ in held], [p for _, p in held], categories))
    print("| category | threshold | precision | recall | held-out precision | held-out recall "
          "| held-out 2 precision | held-out 2 recall |")
    for category in categories:
        m = overall[category]
        cells = []
        for _, metrics in splits.values():
            h = metrics[category]
            seen = h.true_positives + h.false_positives + h.false_negatives
            cells.append(f"{h.precision:.2f} | {h.recall:.2f}" if seen else "- | -")
        print(f"| {category} | {DEFAULT_THRESHOLDS[category]} | {m.precision:.2f} | {m.recall:.2f} | "
              + " | ".join(cells) + f" |  ({m.true_positives}/{m.false_positives}/{m.false_negatives} tp/fp/fn)")
    print(f"hard negatives flagged: {hard_negative_false_positive_rate(rows, predictions):.3f} overall (all splits), "
          + ", ".join(f"{hard_negative_false_positive_rate([r for r, _ in held], [p for _, p in held]):.3f} {split}"
                      for split, (held, _) in splits.items()))


if __name__ == "__main__":
    main()
