"""Text normalisation: Unicode NFKC, whitespace, control characters, and Simplified/Traditional
Chinese conversion, for one text or for the text fields of a row."""
from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

from ..schemas import Modality, modality_get

CHINESE_CONVERSIONS = ("s2t", "t2s")

# Control characters (category Cc) other than tab and newline; carriage returns are turned into
# newlines first.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# Horizontal whitespace ([^\S\n]: what \s matches, less the newline) between two words.
_RUN_INSIDE_LINE = re.compile(r"(?<=\S)[^\S\n]+(?=\S)")
_TRAILING = re.compile(r"[^\S\n]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")


@functools.cache
def _chinese_converter(conversion: str):
    import opencc

    return opencc.OpenCC(conversion)


def normalise_text(text: str, *, nfkc: bool = True, whitespace: bool = True, control: bool = True,
                   chinese: str | None = None) -> str:
    """The text normalised:

    - nfkc: Unicode NFKC (full-width letters and digits, ligatures, compatibility forms).
    - control: control characters dropped, except tab and newline (CR LF and lone CR become LF).
    - chinese: "s2t" (Simplified to Traditional) or "t2s" with OpenCC, phrase-aware.
    - whitespace: line breaks unified to "\\n"; between two words, a run of spaces or tabs becomes
      one space; blanks at the end of lines and at both ends of the text go; at most one blank
      line in a row. The indentation at the start of a line (after the first) is kept as it is,
      so code and nested lists keep their shape.
    """
    if chinese is not None and chinese not in CHINESE_CONVERSIONS:
        raise ValueError(f"chinese must be one of {', '.join(CHINESE_CONVERSIONS)} or None, not {chinese!r}")
    if not text:
        return text
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    if control or whitespace:
        text = _LINE_BREAKS.sub("\n", text) if whitespace else text.replace("\r\n", "\n").replace("\r", "\n")
    if control:
        text = _CONTROL.sub("", text)
    if chinese:
        text = _chinese_converter(chinese).convert(text)
    if whitespace:
        text = _RUN_INSIDE_LINE.sub(" ", text)
        text = _TRAILING.sub("", text)
        text = _BLANK_LINES.sub("\n\n", text)
        text = text.strip()
    return text


def normalise_row(modality: Modality | str, row: dict[str, Any], *, fields: list[str] | tuple[str, ...] | None = None,
                  nfkc: bool = True, whitespace: bool = True, control: bool = True, chinese: str | None = None) -> dict[str, Any]:
    """A copy of the row with its text fields (default: the modality's) normalised, chat message
    contents included. Other fields and values that are not text are left as they are."""
    shape = modality_get(modality) if isinstance(modality, str) else modality
    options = {"nfkc": nfkc, "whitespace": whitespace, "control": control, "chinese": chinese}
    out = dict(row)
    for name in fields or shape.text_fields:
        value = row.get(name)
        if isinstance(value, str):
            out[name] = normalise_text(value, **options)
        elif isinstance(value, list):
            out[name] = [
                {**message, "content": normalise_text(message["content"], **options)}
                if isinstance(message, dict) and isinstance(message.get("content"), str) else message
                for message in value
            ]
    return out
