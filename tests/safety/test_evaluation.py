"""The detectors against Lode's labeled evaluation set (platform/lode/safety/evaluation): precision
and recall per category at DEFAULT_THRESHOLDS must reach the floors stated in
platform/lode/safety/detectors/README.md (the table between the evaluation markers is read here,
so the README and the test cannot drift apart), and hard negatives must rarely be flagged.

Pure Python (no database); the full path with MiniLM runs once for the module."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from lode.safety.detectors import CATEGORIES, DEFAULT_THRESHOLDS
from lode.safety.evaluation import (FLOOR_SPLITS, KINDS, SPLITS, category_metrics, eval_rows, evaluate,
                                    hard_negative_false_positive_rate)

README = Path(__file__).resolve().parents[2] / "platform" / "lode" / "safety" / "detectors" / "README.md"
HARD_NEGATIVE_FPR_BOUND = 0.05  # overall; see README
README_TOLERANCE = 0.03  # the README's measured figures must stay this close to what the test measures


def _readme_table() -> dict[str, dict[str, float]]:
    text = README.read_text(encoding="utf-8")
    body = text.split("<!-- evaluation-table -->")[1].split("<!-- /evaluation-table -->")[0]
    lines = [line.strip() for line in body.strip().splitlines() if line.strip().startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    table = {}
    for line in lines[2:]:
        cells = [cell.strip().strip("`*") for cell in line.strip("|").split("|")]
        row = dict(zip(header, cells))
        table[row["category"]] = {key: float(re.sub(r"[^\d.]", "", value)) for key, value in row.items()
                                  if key != "category" and re.search(r"\d", value)}
    return table


FLOORS = _readme_table()


@pytest.fixture(scope="module")
def evaluated():
    """All rows and predictions, with the metrics over the floors' splits (dev and holdout)."""
    rows, predictions = evaluate()
    floored = [(row, predicted) for row, predicted in zip(rows, predictions) if row["split"] in FLOOR_SPLITS]
    return rows, predictions, category_metrics([r for r, _ in floored], [p for _, p in floored], CATEGORIES)


def test_the_set_is_well_formed():
    rows = eval_rows()

    assert len(rows) >= 300
    assert Counter(row["lang"] for row in rows).keys() == {"en", "zh"}
    assert min(Counter(row["lang"] for row in rows).values()) >= 150
    assert len({row["text"] for row in rows}) == len(rows)
    for row in rows:
        assert set(row["labels"]) <= set(CATEGORIES), row
        assert row["kind"] in KINDS and row["split"] in SPLITS, row
        assert bool(row["labels"]) == (row["kind"] not in ("benign", "hard_negative")), row
    assert sum(row["kind"] == "hard_negative" for row in rows) >= 100


def test_the_readme_states_a_floor_for_every_labeled_category_at_the_default_threshold():
    labeled = {label for row in eval_rows() for label in row["labels"]}

    assert set(FLOORS) == labeled
    for category, row in FLOORS.items():
        assert row["threshold"] == DEFAULT_THRESHOLDS[category], category
        assert row["precision floor"] >= 0.75 and row["recall floor"] >= 0.5, f"{category}: floors too low to mean anything"


@pytest.mark.parametrize("category", sorted(FLOORS))
def test_precision_and_recall_reach_the_readme_floors(evaluated, category):
    _, _, metrics = evaluated
    measured = metrics[category]
    floor = FLOORS[category]

    assert measured.precision >= floor["precision floor"], (
        f"{category}: precision {measured.precision:.3f} < floor {floor['precision floor']} "
        f"({measured.false_positives} false positives)")
    assert measured.recall >= floor["recall floor"], (
        f"{category}: recall {measured.recall:.3f} < floor {floor['recall floor']} ({measured.false_negatives} missed)")


def test_the_readme_reports_the_measured_figures(evaluated):
    _, _, metrics = evaluated

    stale = {category: (FLOORS[category]["precision"], round(metrics[category].precision, 3),
                        FLOORS[category]["recall"], round(metrics[category].recall, 3))
             for category in FLOORS
             if abs(FLOORS[category]["precision"] - metrics[category].precision) > README_TOLERANCE
             or abs(FLOORS[category]["recall"] - metrics[category].recall) > README_TOLERANCE}
    assert not stale, f"update detectors/README.md (README P, measured P, README R, measured R): {stale}"


@pytest.mark.parametrize("split,column", [("holdout", "held-out"), ("holdout2", "held-out 2")])
def test_the_readme_reports_the_held_out_figures(evaluated, split, column):
    rows, predictions, _ = evaluated
    held = [(row, predicted) for row, predicted in zip(rows, predictions) if row["split"] == split]
    metrics = category_metrics([r for r, _ in held], [p for _, p in held], CATEGORIES)

    assert held
    for category, readme in FLOORS.items():
        m = metrics[category]
        if m.true_positives + m.false_positives + m.false_negatives == 0:
            assert f"{column} recall" not in readme, f"{category}: the README reports {column} figures it has no rows for"
            continue
        assert abs(readme[f"{column} precision"] - m.precision) <= README_TOLERANCE, (category, column, m.precision)
        assert abs(readme[f"{column} recall"] - m.recall) <= README_TOLERANCE, (category, column, m.recall)


def test_hard_negatives_are_rarely_flagged(evaluated):
    rows, predictions, _ = evaluated

    assert hard_negative_false_positive_rate(rows, predictions) <= HARD_NEGATIVE_FPR_BOUND
    for lang in ("en", "zh"):
        picked = [(row, predicted) for row, predicted in zip(rows, predictions) if row["lang"] == lang]
        rate = hard_negative_false_positive_rate([r for r, _ in picked], [p for _, p in picked])
        assert rate <= 2 * HARD_NEGATIVE_FPR_BOUND, f"{lang}: {rate:.3f} of hard negatives flagged"


def test_benign_texts_are_not_flagged(evaluated):
    rows, predictions, _ = evaluated

    flagged = [row["text"] for row, predicted in zip(rows, predictions) if row["kind"] == "benign" and predicted]
    assert len(flagged) <= 1, flagged
