"""The operations a version can go through and the parameters each takes, validated before a job
is created (a bad parameter is a 400 naming it). The work itself is in operations/ (pure) and
jobs.py (reading and writing shards)."""
from __future__ import annotations

from typing import Any

from lode.core.errors import ValidationFailed

from .operations.filters import compile_pattern
from .schemas import modality_get

PII_TYPES = ("email", "phone", "card", "iban", "ip", "cn_id")
TEXT_AUGMENT_OPS = ("synonym", "swap", "delete", "insert", "char_noise")
IMAGE_AUGMENT_OPS = ("hflip", "vflip", "crop", "color_jitter")


def _fail(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"params.{field}: {message}", details={"field": f"params.{field}"})


def _bool(params: dict, name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise _fail(name, "true or false")
    return value


def _int(params: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = params.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(name, f"a whole number from {low} to {high}")
    return value


def _number(params: dict, name: str, default: float, low: float, high: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _fail(name, f"a number from {low} to {high}")
    return float(value)


def _fields(params: dict, modality) -> list[str]:
    fields = params.get("fields")
    if fields is None:
        return list(modality.text_fields)
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise _fail("fields", "a non-empty list of field names")
    unknown = [f for f in fields if f not in modality.text_fields]
    if unknown:
        raise _fail("fields", f"{unknown[0]!r} is not a text field of {modality.name} ({', '.join(modality.text_fields)})")
    return fields


def _choices(params: dict, name: str, allowed: tuple[str, ...], default: list[str]) -> list[str]:
    value = params.get(name, default)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(name, f"a non-empty list drawn from {', '.join(allowed)}")
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise _fail(name, f"{unknown[0]!r} is not one of {', '.join(allowed)}")
    return value


def operation_params_validate(operation: str, params: dict[str, Any], *, modality: str) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise ValidationFailed("params: an object", details={"field": "params"})
    shape = modality_get(modality)
    known = KNOWN.get(operation)
    if known is None:
        raise ValidationFailed(f"operation: one of {', '.join(KNOWN)}", details={"field": "operation"})
    unknown = sorted(set(params) - known)
    if unknown:
        raise _fail(unknown[0], "unknown parameter")
    if operation in PLUGGED:
        return PLUGGED[operation](params, shape)
    if operation == "normalise":
        chinese = params.get("chinese")
        if chinese not in (None, "s2t", "t2s"):
            raise _fail("chinese", "null, s2t or t2s")
        return {"nfkc": _bool(params, "nfkc", True), "whitespace": _bool(params, "whitespace", True),
                "control": _bool(params, "control", True), "chinese": chinese, "fields": _fields(params, shape)}
    if operation == "filter":
        clean = {"fields": _fields(params, shape),
                 "min_chars": _int(params, "min_chars", None, 0, 10_000_000),
                 "max_chars": _int(params, "max_chars", None, 1, 10_000_000)}
        if clean["min_chars"] is not None and clean["max_chars"] is not None and clean["min_chars"] > clean["max_chars"]:
            raise _fail("min_chars", "must not exceed max_chars")
        languages = params.get("languages")
        if languages is not None and (not isinstance(languages, list) or not languages
                                      or not all(isinstance(code, str) and 2 <= len(code) <= 3 for code in languages)):
            raise _fail("languages", "a list of ISO 639-1 codes such as [\"en\", \"zh\"]")
        clean["languages"] = languages
        clean["min_language_confidence"] = _number(params, "min_language_confidence", 0.0, 0.0, 1.0)
        pattern = params.get("pattern")
        if pattern is not None:
            if not isinstance(pattern, str):
                raise _fail("pattern", "a regular expression")
            try:
                compile_pattern(pattern)  # too long, invalid, or prone to catastrophic backtracking
            except ValueError as exc:
                raise _fail("pattern", str(exc).removeprefix("pattern: ")) from None
        clean["pattern"] = pattern
        mode = params.get("pattern_mode", "keep")
        if mode not in ("keep", "drop"):
            raise _fail("pattern_mode", "keep or drop")
        clean["pattern_mode"] = mode
        if clean["min_chars"] is None and clean["max_chars"] is None and not languages and pattern is None:
            raise ValidationFailed("params: give at least one of min_chars, max_chars, languages, pattern",
                                   details={"field": "params"})
        return clean
    if operation == "dedup_exact":
        return {"fields": _fields(params, shape)}
    if operation == "dedup_near":
        return {"fields": _fields(params, shape), "threshold": _number(params, "threshold", 0.8, 0.5, 1.0),
                "num_perm": _int(params, "num_perm", 128, 16, 512), "ngram": _int(params, "ngram", 5, 2, 10)}
    if operation == "pii_redact":
        mode = params.get("mode", "redact")
        if mode not in ("redact", "drop"):
            raise _fail("mode", "redact (mask the matches) or drop (remove rows with any)")
        return {"fields": _fields(params, shape), "types": _choices(params, "types", PII_TYPES, list(PII_TYPES)), "mode": mode}
    if operation == "split":
        ratios = params.get("ratios", [0.8, 0.1, 0.1])
        if (not isinstance(ratios, list) or len(ratios) != 3 or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 0 for r in ratios)
                or abs(sum(ratios) - 1) > 1e-6):
            raise _fail("ratios", "three numbers (train, validation, test), each 0 or more, summing to 1")
        stratify = _bool(params, "stratify", False)
        if stratify and not shape.label_field:
            raise _fail("stratify", f"a {shape.name} dataset has no labels to stratify by")
        return {"ratios": [float(r) for r in ratios], "seed": _int(params, "seed", 0, 0, 2**31 - 1), "stratify": stratify}
    # augment
    allowed = IMAGE_AUGMENT_OPS if shape.name == "image_caption" else TEXT_AUGMENT_OPS
    return {"ops": _choices(params, "ops", allowed, list(allowed[:2])), "copies": _int(params, "copies", 1, 1, 5),
            "seed": _int(params, "seed", 0, 0, 2**31 - 1), "rate": _number(params, "rate", 0.1, 0.01, 0.5),
            "fields": _fields(params, shape)}


KNOWN: dict[str, set[str]] = {
    "normalise": {"nfkc", "whitespace", "control", "chinese", "fields"},
    "filter": {"fields", "min_chars", "max_chars", "languages", "min_language_confidence", "pattern", "pattern_mode"},
    "dedup_exact": {"fields"},
    "dedup_near": {"fields", "threshold", "num_perm", "ngram"},
    "pii_redact": {"fields", "types", "mode"},
    "split": {"ratios", "seed", "stratify"},
    "augment": {"ops", "copies", "seed", "rate", "fields"},
}

# Operations other capabilities contribute (lode.safety's "safety_filter"): their parameters'
# check, given (params, modality); their work is registered in jobs.OPERATIONS.
PLUGGED: dict[str, Any] = {}


def operation_register(name: str, *, known: set[str], validate) -> None:
    KNOWN[name] = set(known)
    PLUGGED[name] = validate
