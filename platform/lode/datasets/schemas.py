"""Modalities and their row schemas: what a row of each kind of dataset holds, how it is checked,
and its Arrow (Parquet) schema. Plain Python (no Django), shared by ingest, operations and the API.

A row is a dict of schema fields. `row_check` returns the cleaned row or raises RowInvalid naming
the field and the reason; it never guesses (a number where text is expected is refused, not cast)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow loads only where rows are read or written, not in every web process
    import pyarrow as pa

MAX_TEXT_CHARS = 200_000
MAX_MESSAGES = 200
MAX_LABELS = 50
MAX_LABEL_CHARS = 200
CHAT_ROLES = ("system", "user", "assistant")


class RowInvalid(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "text" | "messages" | "labels" | "image"
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class Modality:
    name: str
    description: str
    fields: tuple[Field, ...]
    # The text fields operations work on by default (normalise, dedup, PII, length filters).
    text_fields: tuple[str, ...]
    label_field: str | None = None

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(field.name for field in self.fields)

    @property
    def required_fields(self) -> tuple[str, ...]:
        return tuple(field.name for field in self.fields if field.required)

    def arrow_schema(self) -> pa.Schema:
        import pyarrow as pa

        types = _arrow_types()
        return pa.schema([pa.field(field.name, types[field.kind], nullable=not field.required) for field in self.fields])


@lru_cache(maxsize=1)
def _arrow_types() -> dict:
    import pyarrow as pa

    message = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
    return {
        "text": pa.string(),
        "messages": pa.list_(message),
        "labels": pa.list_(pa.string()),
        "image": pa.string(),  # the image's key under the dataset's images/ prefix
    }

MODALITIES: dict[str, Modality] = {
    modality.name: modality
    for modality in (
        Modality("text", "Plain text, one field.", (Field("text", "text"),), ("text",)),
        Modality(
            "instruction", "Instruction pairs: a prompt and the response wanted, optionally a system prompt.",
            (Field("prompt", "text"), Field("response", "text"), Field("system", "text", required=False)),
            ("prompt", "response"),
        ),
        Modality("chat", "Conversations: a list of messages with roles system, user, assistant.",
                 (Field("messages", "messages"),), ("messages",)),
        Modality("classification", "Text with one or more labels.",
                 (Field("text", "text"), Field("labels", "labels")), ("text",), label_field="labels"),
        Modality("preference", "Preference pairs: a prompt, the chosen and the rejected response.",
                 (Field("prompt", "text"), Field("chosen", "text"), Field("rejected", "text")),
                 ("prompt", "chosen", "rejected")),
        Modality("image_caption", "Images with a caption each.",
                 (Field("image", "image"), Field("caption", "text")), ("caption",)),
    )
}


def modality_get(name: str) -> Modality:
    try:
        return MODALITIES[name]
    except KeyError:
        raise ValueError(f"unknown modality {name!r}; one of {', '.join(MODALITIES)}") from None


def _text(value, field: str, *, required: bool) -> str | None:
    # Whitespace alone is no text: a prompt of three spaces teaches nothing.
    if value is None or (isinstance(value, str) and (not value or value.isspace())):
        if required:
            raise RowInvalid(field, "missing")
        return None
    if not isinstance(value, str):
        raise RowInvalid(field, f"must be text, not {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise RowInvalid(field, f"longer than {MAX_TEXT_CHARS} characters")
    if "\x00" in value:
        raise RowInvalid(field, "contains a NUL character")
    return value


def _messages(value, field: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise RowInvalid(field, "must be a non-empty list of messages")
    if len(value) > MAX_MESSAGES:
        raise RowInvalid(field, f"more than {MAX_MESSAGES} messages")
    clean = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or set(message) - {"role", "content"}:
            raise RowInvalid(f"{field}[{index}]", "must be an object with role and content")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise RowInvalid(f"{field}[{index}].role", f"must be one of {', '.join(CHAT_ROLES)}")
        clean.append({"role": role, "content": _text(message.get("content"), f"{field}[{index}].content", required=True)})
    if not any(message["role"] == "assistant" for message in clean):
        raise RowInvalid(field, "has no assistant message to learn from")
    return clean


def _labels(value, field: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RowInvalid(field, "must be a label or a non-empty list of labels")
    if len(value) > MAX_LABELS:
        raise RowInvalid(field, f"more than {MAX_LABELS} labels")
    clean = []
    for label in value:
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise RowInvalid(field, "labels must be text (or whole numbers)")
        text = str(label).strip()
        if not text or len(text) > MAX_LABEL_CHARS:
            raise RowInvalid(field, f"each label needs 1 to {MAX_LABEL_CHARS} characters")
        clean.append(text)
    return clean


def row_check(modality: Modality, row: dict) -> dict:
    """The row with exactly the modality's fields, checked; RowInvalid otherwise."""
    clean = {}
    for field in modality.fields:
        value = row.get(field.name)
        if field.kind == "text":
            clean[field.name] = _text(value, field.name, required=field.required)
        elif field.kind == "messages":
            clean[field.name] = _messages(value, field.name)
        elif field.kind == "labels":
            clean[field.name] = _labels(value, field.name)
        else:  # image: a path inside the upload's zip, resolved by the ingest
            clean[field.name] = _text(value, field.name, required=field.required)
    return clean


def row_texts(modality: Modality, row: dict, fields: tuple[str, ...] | None = None) -> list[str]:
    """The row's text in the given (default: the modality's) text fields, chat messages flattened."""
    texts = []
    for name in fields or modality.text_fields:
        value = row.get(name)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts.extend(message["content"] for message in value if isinstance(message, dict))
    return texts
