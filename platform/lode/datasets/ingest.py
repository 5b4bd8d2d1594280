"""Reading an uploaded dataset file into checked rows: format and encoding detection, column mapping,
a streaming parse, per-row checks, Parquet shards and a content hash. Plain Python (no Django, no
S3, no database): the caller hands over a local path and callbacks that store what comes out.

The rules the job and the API rely on:

- Formats: csv, tsv, jsonl, json (one array of objects), parquet, zip. The format is
  `declared_format`, else the magic bytes (zip, parquet), else the extension (.csv .tsv .tab .jsonl
  .ndjson .json .parquet .pq .zip), else the first text: '[' json, '{' jsonl, a tab in the first
  line tsv, a comma or a semicolon csv. A .json file whose text starts with '{' is read as JSON Lines.
- Encodings (text formats): a UTF-8 BOM gives utf-8-sig; else the first megabyte is tried as strict
  UTF-8, then GB18030 (unless it decodes to private-use characters, as Big5 does), then
  charset-normalizer's best guess. Other double-byte encodings (Shift_JIS) may pass for GB18030: the
  Chinese data comes first. A byte further on that does not decode stops the ingest (code
  "encoding", with the byte offset in the file).
- CSV/TSV: the first record is the header; quoted fields may span lines; quotes are checked strictly
  (a stray quote stops the ingest with its line). A CSV whose header has semicolons and no comma is
  read with ';'. Every value is a string, empty meaning absent. For a `labels` field a value that
  starts with '[' is read as a JSON list, any other is split on '|' (pieces stripped, blank pieces
  dropped): "a|b" and '["a","b"]' are both ["a", "b"]. A `messages` field holds a JSON list.
  JSON and Parquet values go to row_check as they are: a JSON string label is one label, and a
  number where text is expected is refused, not cast.
- One bad record rejects that record, not the file: a JSONL line that is not JSON, a row over
  max_row_bytes, a CSV row with a different number of fields than the header, a row that fails
  row_check, an image missing or unreadable. All are counted, the first max_rejected_kept are kept
  with their record number, line and reason. A CSV or JSON-array record is parsed whole before its
  size is known, so one over 16 x max_row_bytes stops the ingest (most likely an open quote or
  bracket); a JSONL line of any size is only skipped.
- A problem with the file as a whole raises IngestError with a code: "format" (unknown format,
  binary data), "empty", "encoding", "mapping" (a mapped column the file lacks, a required field
  with no column), "too_large", "too_many_rows", "zip_unsafe", "zip_bomb", "unparseable".
- Zips: every member name is checked before anything is read (no absolute paths, '..', drive
  letters, backslashes, symlinks or duplicate names: "zip_unsafe"), and so are the member count, the
  declared total size and each member's compression ratio ("zip_bomb"). Members are inflated here,
  not by zipfile, and inflating stops as soon as the output passes the size the header declared or
  the zip's total limit, so a lying header cannot make a bomb. An image_caption zip holds images and
  a manifest (manifest.csv/.tsv/.jsonl/.json, else the single data file, in the zip's root or its
  single top-level folder) whose `image` column names a member, relative to the manifest's folder.
  Images must open with Pillow (JPEG, PNG, WebP, GIF, BMP, TIFF); each is stored once however many
  rows name it. For other modalities a zip holding one csv/tsv/jsonl/json file is read like that
  file (not Parquet: it needs random access).
- Speed: JSON Lines past the first records is read a megabyte at a time. A chunk whose lines are
  all JSON objects within max_row_bytes, for a modality of text fields only, is taken column by
  column (gathered, checked, hashed and appended to the shard's columns with C-level loops); any
  other chunk, or one with a value the fast check cannot pass, goes record by record. Both give the
  same rows, rejections, line numbers and hash.
- content_hash: sha256 over the accepted rows in order, each canonical JSON (sorted keys, no spaces,
  absent optional fields as null) plus a newline. The same rows give the same hash whatever the
  file's format or encoding.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import json
import os
import posixpath
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, BinaryIO

import charset_normalizer
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from lode.datasets.schemas import MAX_TEXT_CHARS, Modality, RowInvalid, row_check

FORMATS = ("csv", "tsv", "jsonl", "json", "parquet", "zip")
SNIFF_BYTES = 1024 * 1024
SAMPLE_ROWS = 5
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_EXTENSIONS = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
    ".parquet": "parquet", ".pq": "parquet", ".zip": "zip",
}
_MANIFEST_NAMES = ("manifest.csv", "manifest.tsv", "manifest.jsonl", "manifest.json")
_READ_CHUNK = 1024 * 1024
_BATCH_RECORDS = 4096
_INFLATE_CHUNK = 256 * 1024
_RECORD_CAP_FACTOR = 16
# Small members are not held to the ratio: a few kilobytes of repeated text compress far past it,
# and the zip's total limit already bounds what they can inflate to.
_RATIO_FLOOR_BYTES = 64 * 1024
# Bounds the zip's central directory before zipfile parses it into objects (a count in the end
# record can lie, the directory's size cannot): generous for real names, about 1 KiB a member.
_CENTRAL_DIRECTORY_BYTES_PER_MEMBER = 1024
_HASH_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_DRIVE = re.compile(r"^[A-Za-z]:")
_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")


@dataclass(frozen=True)
class IngestLimits:
    max_file_bytes: int = 2 * 1024**3
    max_row_bytes: int = 1024 * 1024  # one line / record
    max_rows: int = 50_000_000
    max_rejected_kept: int = 100  # rejected rows kept in the report (all are counted)
    zip_max_members: int = 100_000
    zip_max_uncompressed_bytes: int = 8 * 1024**3
    zip_max_ratio: int = 200  # per member compressed:uncompressed, zip bombs
    max_image_bytes: int = 32 * 1024**2


class IngestError(Exception):
    """The file as a whole cannot be ingested: the API answers 4xx, the job fails with this message."""

    def __init__(self, message: str, *, code: str = "unparseable", line: int | None = None,
                 byte: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.line = line
        self.byte = byte
        self.field = field


@dataclass(frozen=True)
class Sniff:
    """What the first bytes say."""

    format: str  # "csv" | "tsv" | "jsonl" | "json" | "parquet" | "zip"
    encoding: str | None  # "utf-8", "utf-8-sig", "gb18030", ...; None for parquet and zip
    columns: list[str]
    mapping: dict[str, str]  # schema field -> file column
    sample: list[dict]  # up to SAMPLE_ROWS mapped rows, before row_check


@dataclass
class IngestReport:
    format: str
    encoding: str | None
    columns: list[str]
    mapping: dict[str, str]
    rows_read: int
    accepted: int
    rejected: int
    rejected_samples: list[dict]  # {"row", "line" (None for parquet), "field", "reason"}
    content_hash: str
    shards: int
    images: int
    bytes_read: int


class _RecordBroken(Exception):
    """A record that cannot become a row at all (no field to blame)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# A record as the format readers yield it: (line where it starts or None, its size in bytes or -1
# when unknown, the value). The value is the parsed record (a dict, or a list of CSV fields), a
# string saying why the record is broken, or None when it was too large to read.
Record = tuple[int | None, int, Any]


def sniff(path: str, *, filename: str, modality: Modality, column_mapping: dict[str, str] | None = None,
          declared_format: str | None = None, limits: IngestLimits = IngestLimits()) -> Sniff:
    """The file's format, encoding, columns and mapping, and a few mapped rows; reads about 1 MB."""
    with ExitStack() as stack:
        source = _source_open(path, filename=filename, declared_format=declared_format, modality=modality,
                              limits=limits, meter=_Meter(), stack=stack)
        mapping = _mapping_resolve(modality, source.columns, column_mapping)
        to_row = source.row_maker(modality, mapping)
        sample = []
        for _line, _size, value in source.head:
            if value is None or isinstance(value, str):
                continue
            try:
                sample.append(to_row(value))
            except (RowInvalid, _RecordBroken):
                continue
            if len(sample) == SAMPLE_ROWS:
                break
        return Sniff(format=source.format, encoding=source.encoding, columns=source.columns, mapping=mapping,
                     sample=sample)


def ingest(path: str, *, filename: str, modality: Modality, column_mapping: dict[str, str] | None = None,
           declared_format: str | None = None, limits: IngestLimits = IngestLimits(),
           write_shard: Callable[[pa.Table], None],
           write_image: Callable[[str, bytes], str] | None = None,
           progress: Callable[[float], None] | None = None,
           rows_per_shard: int = 100_000) -> IngestReport:
    """Read the whole file: accepted rows go to write_shard in tables of rows_per_shard rows (schema
    modality.arrow_schema()), images to write_image; the report counts and samples the rejections."""
    if rows_per_shard < 1:
        raise ValueError("rows_per_shard must be at least 1")
    has_images = _has_images(modality)
    if has_images and write_image is None:
        raise ValueError(f"{modality.name} needs write_image to store its images")
    meter = _Meter()
    with ExitStack() as stack:
        source = _source_open(path, filename=filename, declared_format=declared_format, modality=modality,
                              limits=limits, meter=meter, stack=stack)
        mapping = _mapping_resolve(modality, source.columns, column_mapping)
        to_row = source.row_maker(modality, mapping)
        check = _checker(modality)
        store_image = source.archive.image_storer(write_image, base=source.base) if has_images else None
        shards = _Shards(modality, write_shard, rows_per_shard)
        hasher = hashlib.sha256()
        dumps = orjson.dumps
        max_row_bytes, max_rows, kept = limits.max_row_bytes, limits.max_rows, limits.max_rejected_kept
        clean_rows = _CleanRows.maybe(modality, mapping, hasher, shards)
        rows_read = rejected = 0
        rejected_samples: list[dict] = []
        reported = 0.0
        for batch in source.batches(mapping):
            if progress is not None:
                reported = meter.report(progress, reported)
            if batch.__class__ is _CleanBatch:
                if rows_read + len(batch.values) > max_rows:
                    raise IngestError(f"the file has more than {max_rows} rows", code="too_many_rows")
                if clean_rows is not None and clean_rows.take(batch.values):
                    rows_read += len(batch.values)
                    continue
                batch = batch.records()
            for line, size, value in batch:
                rows_read += 1
                if rows_read > max_rows:
                    raise IngestError(f"the file has more than {max_rows} rows", code="too_many_rows")
                field = None
                try:
                    if size > max_row_bytes or value is None:
                        raise _RecordBroken(f"row larger than {max_row_bytes} bytes")
                    if value.__class__ is str:
                        raise _RecordBroken(value)
                    row = check(to_row(value))
                    if store_image is not None:
                        row["image"] = store_image(row["image"])
                    data = dumps(row, option=_HASH_OPTIONS)
                    if size < 0 and len(data) - 1 > max_row_bytes:
                        raise _RecordBroken(f"row larger than {max_row_bytes} bytes")
                except RowInvalid as exc:
                    field, reason = exc.field, exc.reason
                except _RecordBroken as exc:
                    reason = exc.reason
                else:
                    hasher.update(data)
                    shards.add(row)
                    continue
                rejected += 1
                if len(rejected_samples) < kept:
                    rejected_samples.append({"row": rows_read, "line": line, "field": field, "reason": reason})
        shards.flush()
        if progress is not None:
            progress(1.0)
        return IngestReport(
            format=source.format, encoding=source.encoding, columns=source.columns, mapping=mapping,
            rows_read=rows_read, accepted=rows_read - rejected, rejected=rejected,
            rejected_samples=rejected_samples, content_hash=hasher.hexdigest(), shards=shards.written,
            images=store_image.stored if store_image is not None else 0, bytes_read=meter.read,
        )


# Sources: the file opened as its format, its columns and its records.


class _Meter:
    """Bytes read from the uploaded file, for progress and the report."""

    def __init__(self):
        self.read = 0
        self.total = 0

    def report(self, progress: Callable[[float], None], reported: float) -> float:
        fraction = min(self.read / self.total, 1.0) if self.total else 0.0
        if fraction - reported >= 0.01:
            progress(fraction)
            return fraction
        return reported


class _Source:
    def __init__(self, *, format: str, encoding: str | None, columns: list[str], head: list[Record],
                 rest: Iterator[Record] | None, strings: bool):
        self.format = format
        self.encoding = encoding
        self.columns = columns
        self.head = head  # the first records, read to find the columns and the sample
        self.rest = rest
        self.strings = strings  # every value is a string (CSV, TSV)
        self.archive: _Zip | None = None
        self.base = ""  # the folder of a zip's manifest
        # Parquet reads only the mapped columns, so its records start once the mapping is known.
        self.columnar_records: Callable[[list[str]], Iterator[Record]] | None = None
        # JSON Lines reads the rest of the file in batches of lines (rest is then None).
        self.rest_batches: Iterator[list[Record] | _CleanBatch] | None = None

    def records(self, mapping: dict[str, str]) -> Iterator[Record]:
        if self.columnar_records is not None:
            return self.columnar_records(sorted(set(mapping.values()), key=self.columns.index))
        return itertools.chain(self.head, self.rest)

    def batches(self, mapping: dict[str, str]) -> Iterator[list[Record] | _CleanBatch]:
        """The records in batches: lists of records, or (JSON Lines) clean batches."""
        if self.rest_batches is not None:
            yield self.head
            yield from self.rest_batches
            return
        records = self.records(mapping)
        while batch := list(itertools.islice(records, _BATCH_RECORDS)):
            yield batch

    def row_maker(self, modality: Modality, mapping: dict[str, str]) -> Callable[[Any], dict]:
        """A function from a record to the dict of schema fields, with CSV's strings converted."""
        if not self.strings:
            pairs = [(field.name, mapping.get(field.name)) for field in modality.fields]

            def to_row(record: dict) -> dict:
                return {name: record.get(column) for name, column in pairs}

            return to_row
        columns = self.columns
        for column in set(mapping.values()):
            if columns.count(column) > 1:
                field = next(name for name, mapped in mapping.items() if mapped == column)
                raise IngestError(f"column {column!r} appears {columns.count(column)} times in the header",
                                  code="mapping", field=field)
        indexes = [(field.name, columns.index(mapping[field.name]) if field.name in mapping else None)
                   for field in modality.fields]
        converters = [(field.name, _STRING_CONVERTERS[field.kind]) for field in modality.fields
                      if field.kind in _STRING_CONVERTERS]
        width = len(columns)

        def csv_to_row(fields: list[str]) -> dict:
            if len(fields) != width:
                raise _RecordBroken(f"{len(fields)} fields where the header has {width}")
            row = {name: None if index is None else fields[index] for name, index in indexes}
            for name, convert in converters:
                row[name] = convert(row[name], name)
            return row

        return csv_to_row


def _source_open(path: str, *, filename: str, declared_format: str | None, modality: Modality,
                 limits: IngestLimits, meter: _Meter, stack: ExitStack) -> _Source:
    size = os.path.getsize(path)
    if size > limits.max_file_bytes:
        raise IngestError(f"the file is {size} bytes; the limit is {limits.max_file_bytes}", code="too_large")
    if size == 0:
        raise IngestError("the file is empty", code="empty")
    meter.total = size
    handle = stack.enter_context(open(path, "rb"))
    fmt = _format_detect(handle.read(8), filename=filename, declared_format=declared_format)
    handle.seek(0)
    if _has_images(modality) and fmt != "zip":
        raise IngestError(f"{modality.name} data is a zip of images with a manifest naming them", code="format")
    if fmt == "zip":
        archive = _Zip(handle, size=size, limits=limits, meter=meter)
        member, member_format = archive.data_member(images=_has_images(modality))
        source = _text_source(archive.member_chunks(member), member_format, limits=limits)
        source.format, source.encoding = "zip", None
        source.archive = archive
        source.base = posixpath.dirname(member.filename)
        return source
    if fmt == "parquet":
        return _parquet_source(handle, meter=meter)
    return _text_source(_file_chunks(handle, meter), fmt, limits=limits)


def _format_detect(magic: bytes, *, filename: str, declared_format: str | None) -> str | None:
    """The format, or None for text whose format its first lines will tell."""
    if declared_format:
        if declared_format not in FORMATS:
            raise IngestError(f"unknown format {declared_format!r}; one of {', '.join(FORMATS)}", code="format")
        return declared_format
    if magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if magic.startswith(b"PAR1"):
        return "parquet"
    if magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"7z\xbc\xaf", b"\x28\xb5\x2f\xfd")):
        raise IngestError("compressed files other than zip are not supported", code="format")
    return _EXTENSIONS.get(os.path.splitext(filename)[1].lower())


def _has_images(modality: Modality) -> bool:
    return any(field.kind == "image" for field in modality.fields)


def _file_chunks(handle: BinaryIO, meter: _Meter) -> Iterator[bytes]:
    while chunk := handle.read(_READ_CHUNK):
        meter.read += len(chunk)
        yield chunk


# Text: encoding, then CSV, JSON Lines or a JSON array.


def _text_source(chunks: Iterator[bytes], fmt: str | None, *, limits: IngestLimits) -> _Source:
    parts, size, complete = [], 0, True
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= SNIFF_BYTES:
            complete = False
            break
    head = b"".join(parts)
    encoding = _encoding_detect(head, complete=complete)
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(head, final=complete)
    except UnicodeDecodeError as exc:
        raise IngestError(f"byte {exc.start} is not valid {encoding}; save the file as UTF-8",
                          code="encoding", byte=exc.start) from None
    if "\x00" in text:
        raise IngestError("the file holds binary data, not text", code="format")
    stripped = text.lstrip("\ufeff \t\r\n")
    if complete and not stripped:
        raise IngestError("the file is empty", code="empty")
    first_line = stripped.split("\n", 1)[0]
    fmt = fmt or _format_from_text(stripped, first_line)
    if fmt == "json" and stripped.startswith("{"):
        fmt = "jsonl"
    stream = io.BufferedReader(_Utf8Stream(itertools.chain([head], chunks), encoding), buffer_size=_READ_CHUNK)
    cap = limits.max_row_bytes * _RECORD_CAP_FACTOR
    if fmt in ("csv", "tsv"):
        delimiter = "\t" if fmt == "tsv" else ";" if ";" in first_line and "," not in first_line else ","
        records = _csv_records(stream, delimiter=delimiter, cap=cap)
        header = next(records, None)
        if header is None:
            raise IngestError("the file is empty", code="empty")
        columns = [column.strip() for column in header[2]]
        first = list(itertools.islice(records, SAMPLE_ROWS))
        if not first:
            raise IngestError("the file has a header and no rows", code="empty")
        return _Source(format=fmt, encoding=encoding, columns=columns, head=first, rest=records, strings=True)
    rest_batches = None
    if fmt == "jsonl":
        # The first records line by line, then the rest in batches from where they stopped.
        position = _LinePosition()
        records = _jsonl_records(stream, max_row_bytes=limits.max_row_bytes, position=position)
        rest_batches = _jsonl_batches(stream, max_row_bytes=limits.max_row_bytes, position=position)
    elif fmt == "json":
        text_stream = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        records = _json_array_records(text_stream, max_row_bytes=limits.max_row_bytes, cap=cap)
    else:
        raise IngestError(f"cannot tell the format of the file; declare one of {', '.join(FORMATS)}", code="format")
    first = list(itertools.islice(records, SAMPLE_ROWS))
    if not first:
        raise IngestError("the file has no records", code="empty")
    columns: dict[str, None] = {}
    for _line, _size, value in first:
        if isinstance(value, dict):
            columns.update(dict.fromkeys(value))
    if not columns:
        line, _size, value = first[0]
        reason = value or "larger than max_row_bytes"
        raise IngestError(f"the first records cannot be read (line {line}: {reason})", line=line)
    source = _Source(format=fmt, encoding=encoding, columns=list(columns), head=first,
                     rest=records if rest_batches is None else None, strings=False)
    source.rest_batches = rest_batches
    return source


def _format_from_text(text: str, first_line: str) -> str:
    if text.startswith("["):
        return "json"
    if text.startswith("{"):
        return "jsonl"
    if "\t" in first_line:
        return "tsv"
    if "," in first_line or ";" in first_line:
        return "csv"
    raise IngestError(f"cannot tell the format of the file; declare one of {', '.join(FORMATS)}", code="format")


def _encoding_detect(head: bytes, *, complete: bool) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    for encoding in ("utf-8", "gb18030"):
        try:
            text = codecs.getincrementaldecoder(encoding)().decode(head, final=complete)
        except UnicodeDecodeError:
            continue
        # Big5 often decodes as GB18030, into private-use code points real Chinese text lacks.
        if encoding == "gb18030" and _PRIVATE_USE.search(text):
            continue
        return encoding
    best = charset_normalizer.from_bytes(head).best()
    if best is None:
        raise IngestError("cannot tell the file's text encoding; save it as UTF-8", code="encoding")
    return best.encoding


class _Utf8Stream(io.RawIOBase):
    """The text as UTF-8 bytes, decoded chunk by chunk: UTF-8 is checked and passed through, other
    encodings are converted. A byte that does not decode raises IngestError with its file offset."""

    def __init__(self, chunks: Iterator[bytes], encoding: str):
        self._chunks = chunks
        self._encoding = encoding
        self._is_utf8 = encoding in ("utf-8", "utf-8-sig")
        self._decoder = codecs.getincrementaldecoder("utf-8" if self._is_utf8 else encoding)()
        self._skip = len(codecs.BOM_UTF8) if encoding == "utf-8-sig" else 0
        self._offset = 0  # file bytes taken from chunks
        self._pending = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            if self._done:
                return 0
            chunk = next(self._chunks, None)
            self._pending = memoryview(self._convert(chunk))
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _convert(self, chunk: bytes | None) -> bytes:
        start = self._offset
        if chunk is None:
            self._done = True
            chunk, final = b"", True
        else:
            self._offset += len(chunk)
            final = False
            if self._skip:
                skipped = chunk[:self._skip]
                chunk = chunk[len(skipped):]
                self._skip -= len(skipped)
                start += len(skipped)
        pending = len(self._decoder.getstate()[0])
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            byte = start - pending + exc.start
            raise IngestError(
                f"byte {byte} is not valid {self._encoding} (the encoding found in the first megabyte); "
                "save the file as UTF-8", code="encoding", byte=byte) from None
        return chunk if self._is_utf8 else text.encode("utf-8")


def _csv_records(stream: io.BufferedReader, *, delimiter: str, cap: int) -> Iterator[Record]:
    """The header, then the records (lists of fields) with their first line and size in bytes."""
    # The csv module's field limit is process-wide; raising it to our own cap is all it needs.
    if csv.field_size_limit() < cap:
        csv.field_size_limit(cap)
    consumed = record_start = 0
    record_line = 1

    def lines() -> Iterator[str]:
        nonlocal consumed
        readline = stream.readline
        while line := readline(cap + 1):
            consumed += len(line)
            if consumed - record_start > cap:
                raise IngestError(f"the record starting on line {record_line} is larger than {cap} bytes; "
                                  "is a quote left open?", line=record_line)
            yield line.decode("utf-8")

    reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise IngestError(f"CSV line {reader.line_num}: {exc}", line=reader.line_num) from None
        line, size = record_line, consumed - record_start
        record_line, record_start = reader.line_num + 1, consumed
        if fields:  # the csv module gives [] for a blank line
            yield line, size, fields


class _LinePosition:
    """The number of the last line read from a JSON Lines stream."""

    def __init__(self):
        self.line = 0


class _CleanBatch:
    """Consecutive lines of JSON Lines, each a JSON object of at most max_row_bytes, none blank."""

    __slots__ = ("first_line", "values", "sizes")

    def __init__(self, first_line: int, values: list[dict], sizes: list[int]):
        self.first_line = first_line
        self.values = values
        self.sizes = sizes

    def records(self) -> list[Record]:
        return list(zip(itertools.count(self.first_line), self.sizes, self.values))


def _jsonl_records(stream: io.BufferedReader, *, max_row_bytes: int, position: _LinePosition) -> Iterator[Record]:
    """Records line by line; position.line follows the lines read."""
    readline = stream.readline
    loads = orjson.loads
    JSONDecodeError = orjson.JSONDecodeError
    line_number = position.line
    while line := readline(max_row_bytes + 2):
        line_number += 1
        position.line = line_number
        if line[-1] == 10:  # "\n"
            size = len(line) - 1
        else:
            size = len(line)
            if size > max_row_bytes:  # skip the rest of this line without holding it
                while (rest := readline(_READ_CHUNK)) and rest[-1] != 10:
                    size += len(rest)
                size += len(rest)
                yield line_number, size, None
                continue
        if size > max_row_bytes:
            yield line_number, size, None
            continue
        if line[0] != 123 and line.isspace():  # 123 is "{"; blank lines are not records
            continue
        try:
            value = loads(line)
        except JSONDecodeError as exc:
            yield line_number, size, f"invalid JSON: {exc}"
            continue
        yield line_number, size, value if value.__class__ is dict else "not a JSON object"


def _jsonl_batches(stream: io.BufferedReader, *, max_row_bytes: int,
                   position: _LinePosition) -> Iterator[list[Record] | _CleanBatch]:
    """The lines after position.line, a chunk at a time: a chunk whose lines are all JSON objects
    within the limit is one clean batch (parsed with one call per line and no other Python work per
    line); any other chunk becomes records exactly as _jsonl_records makes them. A line longer than
    max_row_bytes is never held whole: it is skipped chunk by chunk and reported by its size."""
    read = stream.read
    loads = orjson.loads
    JSONDecodeError = orjson.JSONDecodeError
    carry = b""
    while True:
        chunk = read(_READ_CHUNK)
        data = carry + chunk if carry else chunk
        if not chunk:
            if data:
                yield _jsonl_line_records(data.split(b"\n"), position, max_row_bytes=max_row_bytes)
            return
        end = data.rfind(b"\n")
        carry = data[end + 1:]
        if end >= 0:
            lines = data[:end].split(b"\n")
            sizes = list(map(len, lines))
            values = None
            if max(sizes) <= max_row_bytes:
                try:
                    values = list(map(loads, lines))  # a blank line raises too
                except JSONDecodeError:
                    pass
            if values is not None and set(map(type, values)) == {dict}:
                yield _CleanBatch(position.line + 1, values, sizes)
                position.line += len(lines)
            else:
                yield _jsonl_line_records(lines, position, max_row_bytes=max_row_bytes)
        if len(carry) > max_row_bytes:  # an over-size line: skip to its end
            size = len(carry)
            while chunk := read(_READ_CHUNK):
                newline = chunk.find(b"\n")
                if newline >= 0:
                    size += newline
                    carry = chunk[newline + 1:]
                    break
                size += len(chunk)
            else:
                carry = b""
            position.line += 1
            yield [(position.line, size, None)]


def _jsonl_line_records(lines: list[bytes], position: _LinePosition, *, max_row_bytes: int) -> list[Record]:
    """Records of lines without their newlines, as _jsonl_records makes them."""
    records = []
    line_number = position.line
    for line in lines:
        line_number += 1
        size = len(line)
        if size > max_row_bytes:
            records.append((line_number, size, None))
            continue
        if not line or (line[0] != 123 and line.isspace()):  # blank lines are not records
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            records.append((line_number, size, f"invalid JSON: {exc}"))
            continue
        records.append((line_number, size, value if value.__class__ is dict else "not a JSON object"))
    position.line = line_number
    return records


def _json_array_records(text: io.TextIOBase, *, max_row_bytes: int, cap: int) -> Iterator[Record]:
    """The objects of one JSON array, parsed one at a time over a sliding buffer."""
    decoder = json.JSONDecoder()
    buffer, position, at_end = "", 0, False
    counted_to, counted_line = 0, 1  # the line number at buffer[counted_to]

    def more() -> bool:
        nonlocal buffer, position, at_end, counted_to, counted_line
        chunk = text.read(_READ_CHUNK)
        if not chunk:
            at_end = True
            return False
        counted_line += buffer.count("\n", counted_to, position)
        buffer, counted_to, position = buffer[position:] + chunk, 0, 0
        return True

    def line_at(index: int) -> int:
        nonlocal counted_to, counted_line
        counted_line += buffer.count("\n", counted_to, index)
        counted_to = index
        return counted_line

    def skip_whitespace() -> None:
        nonlocal position
        while True:
            position = _WHITESPACE.match(buffer, position).end()
            if position < len(buffer) or at_end:
                return
            more()

    def fail(message: str, index: int) -> IngestError:
        return IngestError(f"JSON line {line_at(index)}: {message}", line=line_at(index))

    skip_whitespace()
    if position == len(buffer):
        return
    if buffer[position] != "[":
        raise fail("a .json file must hold one array of objects (or use JSON Lines)", position)
    position += 1
    first = True
    while True:
        skip_whitespace()
        if position == len(buffer):
            raise fail("the array is not closed", position)
        if buffer[position] == "]":
            position += 1
            skip_whitespace()
            if position < len(buffer):
                raise fail("text after the end of the array", position)
            return
        if not first:
            if buffer[position] != ",":
                raise fail("expected ',' or ']' between records", position)
            position += 1
            skip_whitespace()
        while True:
            try:
                value, end = decoder.raw_decode(buffer, position)
                if end < len(buffer) or at_end:  # a value ending the buffer may go on in the next chunk
                    break
            except json.JSONDecodeError as exc:
                if at_end:
                    raise fail(exc.msg, exc.pos) from None
            if len(buffer) - position > cap:
                raise fail(f"a record is larger than {cap} bytes; is a bracket or quote left open?", position)
            more()
        size = end - position
        if size * 4 > max_row_bytes:  # at most 4 bytes a character: only then count the bytes
            size = len(buffer[position:end].encode("utf-8"))
        yield line_at(position), size, value if value.__class__ is dict else "not a JSON object"
        position, first = end, False


# Parquet.


def _parquet_source(handle: BinaryIO, *, meter: _Meter) -> _Source:
    try:
        parquet = pq.ParquetFile(handle)
        rows = parquet.metadata.num_rows
        columns = list(parquet.schema_arrow.names)
        head = [(None, -1, record) for record in next(parquet.iter_batches(batch_size=SAMPLE_ROWS)).to_pylist()] \
            if rows else []
    except (pa.ArrowException, OSError) as exc:
        raise IngestError(f"not a readable Parquet file: {exc}") from None
    if not rows:
        raise IngestError("the file has no rows", code="empty")
    source = _Source(format="parquet", encoding=None, columns=columns, head=head, rest=None, strings=False)

    def records(columns_wanted: list[str]) -> Iterator[Record]:
        done = 0
        try:
            for batch in parquet.iter_batches(batch_size=8192, columns=columns_wanted):
                for record in batch.to_pylist():
                    yield None, -1, record
                done += batch.num_rows
                meter.read = meter.total * done // rows
        except (pa.ArrowException, OSError) as exc:
            raise IngestError(f"Parquet file unreadable after row {done}: {exc}") from None

    source.columnar_records = records
    return source


# Zips.


class _Zip:
    def __init__(self, handle: BinaryIO, *, size: int, limits: IngestLimits, meter: _Meter):
        self._handle = handle
        self._limits = limits
        self._meter = meter
        _zip_directory_check(handle, size=size, limits=limits)
        try:
            infos = zipfile.ZipFile(handle).infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
            raise IngestError(f"not a readable zip: {exc}") from None
        if len(infos) > limits.zip_max_members:
            raise IngestError(f"the zip has {len(infos)} members; the limit is {limits.zip_max_members}",
                              code="zip_bomb")
        self.members: dict[str, zipfile.ZipInfo] = {}
        declared = 0
        for info in infos:
            name = info.filename
            if (name.startswith("/") or "\\" in name or _DRIVE.match(name) or ".." in name.split("/")
                    or stat.S_ISLNK(info.external_attr >> 16)):
                raise IngestError(f"unsafe zip member {name!r} (absolute path, '..', drive, backslash or symlink)",
                                  code="zip_unsafe")
            if name in self.members:
                raise IngestError(f"the zip holds {name!r} twice", code="zip_unsafe")
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise IngestError(f"zip member {name!r} is encrypted")
            if (info.file_size > _RATIO_FLOOR_BYTES
                    and info.file_size > limits.zip_max_ratio * max(info.compress_size, 1)):
                raise IngestError(f"zip member {name!r} is compressed more than {limits.zip_max_ratio}:1",
                                  code="zip_bomb")
            declared += info.file_size
            self.members[name] = info
        if declared > limits.zip_max_uncompressed_bytes:
            raise IngestError(f"the zip unpacks to {declared} bytes; the limit is {limits.zip_max_uncompressed_bytes}",
                              code="zip_bomb")
        self._inflated = 0

    def data_member(self, *, images: bool) -> tuple[zipfile.ZipInfo, str]:
        """The manifest (images) or the one data file, in the root or the single top-level folder."""
        names = [name for name in self.members if not _zip_junk(name)]
        tops = {name.split("/", 1)[0] for name in names}
        root = next(iter(tops)) + "/" if len(tops) == 1 and all("/" in name for name in names) else ""
        in_root = [name for name in names if name.startswith(root) and "/" not in name[len(root):]]
        manifests = [name for name in in_root if name[len(root):].lower() in _MANIFEST_NAMES]
        data = manifests or [name for name in in_root
                             if _EXTENSIONS.get(posixpath.splitext(name)[1].lower()) in ("csv", "tsv", "jsonl", "json")]
        what = "a manifest (manifest.csv or manifest.jsonl)" if images else "one csv, tsv, jsonl or json file"
        if len(data) != 1:
            found = f"found {', '.join(data[:5])}" if data else "found none"
            raise IngestError(f"the zip must hold {what} in its root; {found}", code="format")
        name = data[0]
        return self.members[name], _EXTENSIONS[posixpath.splitext(name)[1].lower()]

    def member_chunks(self, info: zipfile.ZipInfo) -> Iterator[bytes]:
        """The member's bytes. Inflated here rather than by zipfile so that no header is trusted:
        inflating stops once the output passes the declared size or the zip's total limit."""
        handle, name = self._handle, info.filename
        handle.seek(info.header_offset)
        local = handle.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise IngestError(f"zip member {name!r} is damaged (no local header)")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        position = info.header_offset + 30 + name_length + extra_length
        if info.compress_type == zipfile.ZIP_DEFLATED:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        elif info.compress_type == zipfile.ZIP_STORED:
            inflater = None
        else:
            raise IngestError(f"zip member {name!r} uses compression method {info.compress_type}; use deflate")
        left, produced, crc = info.compress_size, 0, 0
        total_limit = self._limits.zip_max_uncompressed_bytes
        while True:
            data = inflater.unconsumed_tail if inflater is not None else b""
            if not data and left:
                handle.seek(position)  # another member may have been read meanwhile
                data = handle.read(min(left, _INFLATE_CHUNK))
                if not data:
                    raise IngestError(f"zip member {name!r} is truncated")
                position += len(data)
                left -= len(data)
                self._meter.read += len(data)
            piece = data if inflater is None else inflater.decompress(data, _INFLATE_CHUNK)
            if not piece:
                if not data:
                    break
                continue
            produced += len(piece)
            self._inflated += len(piece)
            if produced > info.file_size:
                raise IngestError(f"zip member {name!r} inflates past the {info.file_size} bytes its header declares",
                                  code="zip_bomb")
            if self._inflated > total_limit:
                raise IngestError(f"the zip unpacks to more than {total_limit} bytes", code="zip_bomb")
            crc = zlib.crc32(piece, crc)
            yield piece
        if produced != info.file_size or crc != info.CRC or (inflater is not None and not inflater.eof):
            raise IngestError(f"zip member {name!r} is damaged (size or checksum differs from its header)")

    def image_storer(self, write_image: Callable[[str, bytes], str], *, base: str) -> _ImageStorer:
        return _ImageStorer(self, write_image, base=base)


class _ImageStorer:
    """Resolves a manifest's image name to a member, checks it once and stores it once."""

    def __init__(self, archive: _Zip, write_image: Callable[[str, bytes], str], *, base: str):
        self._archive = archive
        self._write_image = write_image
        self._base = base
        self._done: dict[str, str | RowInvalid] = {}
        self.stored = 0

    def __call__(self, reference: str) -> str:
        members = self._archive.members
        name = posixpath.normpath(posixpath.join(self._base, reference))
        if name not in members and reference in members:
            name = reference
        outcome = self._done.get(name)
        if outcome is None:
            outcome = self._done[name] = self._store(name, reference)
        if isinstance(outcome, RowInvalid):
            raise RowInvalid(outcome.field, outcome.reason)  # a fresh one: a raised exception keeps its traceback
        return outcome

    def _store(self, name: str, reference: str) -> str | RowInvalid:
        info = self._archive.members.get(name)
        if info is None:
            return RowInvalid("image", f"no file {reference!r} in the zip")
        limit = self._archive._limits.max_image_bytes
        if info.file_size > limit:
            return RowInvalid("image", f"image larger than {limit} bytes")
        data = b"".join(self._archive.member_chunks(info))
        try:
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                image.verify()
        except Exception as exc:  # Pillow raises many kinds for a bad file; each means "not usable"
            return RowInvalid("image", f"not a readable image ({exc.__class__.__name__}: {exc})"[:300])
        key = self._write_image(name, data)
        self.stored += 1
        return key


def _zip_junk(name: str) -> bool:
    base = posixpath.basename(name)
    return name.startswith("__MACOSX/") or base.startswith("._") or base in (".DS_Store", "Thumbs.db")


def _zip_directory_check(handle: BinaryIO, *, size: int, limits: IngestLimits) -> None:
    """Member count and central directory size from the end record, before zipfile builds an
    object per member: a zip of millions of empty members is a bomb for memory."""
    tail_size = min(size, 22 + 65535)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # zipfile will say what is wrong
    entries, directory_size = struct.unpack("<HI", tail[at + 10:at + 16])
    locator = tail[at - 20:at] if at >= 20 else b""
    if locator[:4] == b"PK\x06\x07":
        (record_offset,) = struct.unpack("<Q", locator[8:16])
        handle.seek(record_offset)
        record = handle.read(56)
        if record[:4] == b"PK\x06\x06":
            entries, directory_size = struct.unpack("<QQ", record[32:48])
    handle.seek(0)
    if entries > limits.zip_max_members:
        raise IngestError(f"the zip has {entries} members; the limit is {limits.zip_max_members}", code="zip_bomb")
    if directory_size > limits.zip_max_members * _CENTRAL_DIRECTORY_BYTES_PER_MEMBER:
        raise IngestError(f"the zip's directory is {directory_size} bytes, too large", code="zip_bomb")


# Rows: CSV conversions, checks and shards.


def _labels_from_string(value: str | None, field: str) -> list | None:
    text = (value or "").strip()
    if not text:
        return None
    if text.startswith("["):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise RowInvalid(field, f"invalid JSON list: {exc}") from None
    return [piece.strip() for piece in text.split("|") if piece.strip()]


def _messages_from_string(value: str | None, field: str) -> Any:
    if not value:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise RowInvalid(field, f"invalid JSON: {exc}") from None


_STRING_CONVERTERS = {"labels": _labels_from_string, "messages": _messages_from_string}


def _checker(modality: Modality) -> Callable[[dict], dict]:
    """row_check, with a fast path for modalities of text fields only: a row whose fields are all
    plain text within limits (or an absent optional) is already clean; anything else goes to
    row_check, which names the field and the reason."""
    if any(field.kind not in ("text", "image") for field in modality.fields):
        return lambda row: row_check(modality, row)
    fields = [(field.name, field.required) for field in modality.fields]

    def check(row: dict) -> dict:
        for name, required in fields:
            value = row[name]
            if value.__class__ is str:
                if value and len(value) <= MAX_TEXT_CHARS and "\x00" not in value and not value.isspace():
                    continue
            elif value is None and not required:
                continue
            return row_check(modality, row)
        return row

    return check


class _CleanRows:
    """Clean batches of a modality of text fields only, taken column by column: the fields are
    gathered and checked a column at a time, hashed as the row-by-row path hashes them, and handed
    to the shards as columns. A batch with anything the fast check of _checker would not pass is
    refused whole (take returns False, nothing taken) and goes row by row."""

    def __init__(self, modality: Modality, mapping: dict[str, str], hasher, shards: _Shards):
        self._fields = [(field.name, mapping.get(field.name), field.required) for field in modality.fields]
        self._hasher = hasher
        self._shards = shards
        # orjson with OPT_SORT_KEYS writes the fields in this order, each as '"name":' + value.
        order = sorted(range(len(self._fields)), key=lambda index: self._fields[index][0].encode())
        self._hash_order = order
        self._hash_keys = [(b"{" if position == 0 else b",") + orjson.dumps(self._fields[index][0]) + b":"
                           for position, index in enumerate(order)]

    @classmethod
    def maybe(cls, modality: Modality, mapping: dict[str, str], hasher, shards: _Shards) -> _CleanRows | None:
        if any(field.kind != "text" for field in modality.fields):
            return None
        return cls(modality, mapping, hasher, shards)

    def take(self, values: list[dict]) -> bool:
        count = len(values)
        columns = []
        for _name, column, required in self._fields:
            if column is None:
                columns.append([None] * count)
                continue
            values_of = list(map(dict.get, values, itertools.repeat(column, count)))
            kinds = set(map(type, values_of))
            if kinds == {str}:
                texts = values_of
            elif not required and kinds <= {str, type(None)}:
                texts = [value for value in values_of if value is not None]
            else:
                return False
            if texts and (min(map(len, texts)) == 0 or max(map(len, texts)) > MAX_TEXT_CHARS
                          or any(map(str.isspace, texts)) or "\x00" in "".join(texts)):
                return False
            columns.append(values_of)
        dumps = orjson.dumps
        pieces = []
        for key, index in zip(self._hash_keys, self._hash_order):
            pieces.append(itertools.repeat(key, count))
            pieces.append(map(dumps, columns[index]))
        pieces.append(itertools.repeat(b"}\n", count))
        self._hasher.update(b"".join(itertools.chain.from_iterable(zip(*pieces))))
        self._shards.extend(columns, count)
        return True


class _Shards:
    def __init__(self, modality: Modality, write_shard: Callable[[pa.Table], None], rows_per_shard: int):
        self._schema = modality.arrow_schema()
        self._names = modality.field_names
        self._write_shard = write_shard
        self._rows_per_shard = rows_per_shard
        self._columns: dict[str, list] = {}
        self._count = 0
        self.written = 0
        self._reset()

    def _reset(self) -> None:
        self._columns = {name: [] for name in self._names}
        self._appenders = [(self._columns[name].append, name) for name in self._names]
        self._count = 0

    def add(self, row: dict) -> None:
        for append, name in self._appenders:
            append(row[name])
        self._count += 1
        if self._count >= self._rows_per_shard:
            self.flush()

    def extend(self, columns: list[list], count: int) -> None:
        """count rows given as one list per field, in the modality's field order."""
        start = 0
        while start < count:
            room = min(self._rows_per_shard - self._count, count - start)
            for (append, name), values in zip(self._appenders, columns):
                self._columns[name].extend(values[start:start + room] if start or room < count else values)
            self._count += room
            start += room
            if self._count >= self._rows_per_shard:
                self.flush()

    def flush(self) -> None:
        if not self._count:
            return
        table = pa.Table.from_pydict(self._columns, schema=self._schema)
        self._reset()
        self._write_shard(table)
        self.written += 1


def _mapping_resolve(modality: Modality, columns: list[str], column_mapping: dict[str, str] | None) -> dict[str, str]:
    """Schema field -> file column: the explicit mapping, else the same name, else the same name
    ignoring case; a required field left without a column is an error naming it."""
    listed = ", ".join(repr(column) for column in columns[:30]) + (" ..." if len(columns) > 30 else "")
    mapping: dict[str, str] = {}
    for field_name, column in (column_mapping or {}).items():
        if field_name not in modality.field_names:
            raise IngestError(f"the mapping names {field_name!r}, not a field of {modality.name} "
                              f"({', '.join(modality.field_names)})", code="mapping", field=field_name)
        if column not in columns:
            raise IngestError(f"the mapping takes {field_name!r} from column {column!r}, which the file lacks "
                              f"(columns: {listed})", code="mapping", field=field_name)
        mapping[field_name] = column
    folded: dict[str, str] = {}
    for column in columns:
        folded.setdefault(column.casefold(), column)
    resolved = {}
    for field in modality.fields:
        column = mapping.get(field.name)
        if column is None:
            column = field.name if field.name in columns else folded.get(field.name.casefold())
        if column is not None:
            resolved[field.name] = column
        elif field.required:
            raise IngestError(f"no column for the required field {field.name!r}; map one of the file's columns "
                              f"({listed})", code="mapping", field=field.name)
    return resolved
