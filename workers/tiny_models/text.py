"""The text Lode ships for pre-training the tiny models (`corpus/*.txt`, original writing in the
styles of the verticals Lode serves), read as documents separated by blank lines."""
from __future__ import annotations

import hashlib
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"


def corpus_paths() -> list[Path]:
    # Sorted so the document order, and with it the trained tokenizer, never depends on the disk.
    return sorted(CORPUS_DIR.glob("*.txt"))


def corpus_documents() -> list[str]:
    documents: list[str] = []
    for path in corpus_paths():
        text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
        documents.extend(chunk.strip() for chunk in text.split("\n\n") if chunk.strip())
    return documents


def corpus_size_bytes() -> int:
    return sum(path.stat().st_size for path in corpus_paths())


def corpus_sha256() -> str:
    """Digest of the shipped text: a changed corpus means the text models must be rebuilt."""
    digest = hashlib.sha256()
    for path in corpus_paths():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
