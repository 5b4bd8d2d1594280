"""The pure ingest: every format for more than one modality, encodings, column mapping, per-row
rejections, whole-file errors (malformed CSV, oversize, zip traversal and bombs, bad encodings),
shards and the content hash. Files are built in tmp_path; no database, no S3."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import stat
import struct
import zipfile

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lode.datasets import ingest as ingest_module
from lode.datasets.ingest import IngestError, IngestLimits, IngestReport, ingest, sniff
from lode.datasets.schemas import MODALITIES

INSTRUCTION_ROWS = [
    {"prompt": "Summarise the clause.", "response": "The tenant pays on the 1st.", "system": "You are a lawyer."},
    {"prompt": "Line one\nline two, with a comma", "response": 'She said "yes".', "system": None},
    {"prompt": "合同的主要条款是什么？", "response": "租金每月一号支付。", "system": None},
]
CLASSIFICATION_ROWS = [
    {"text": "Refund not received", "labels": ["billing"]},
    {"text": "App crashes, then logs me out", "labels": ["bug", "auth"]},
    {"text": "退款还没到账", "labels": ["billing", "中文"]},
]
ROWS = {"instruction": INSTRUCTION_ROWS, "classification": CLASSIFICATION_ROWS}


def _canonical_hash(rows: list[dict]) -> str:
    """The content hash as documented, computed without orjson."""
    hasher = hashlib.sha256()
    for row in rows:
        hasher.update(json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
    return hasher.hexdigest()


def _csv_bytes(rows: list[dict], *, delimiter: str = ",", encoding: str = "utf-8") -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    columns = list(rows[0])
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["|".join(value) if isinstance(value, list) else "" if value is None else value
                         for value in (row[column] for column in columns)])
    return buffer.getvalue().encode(encoding)


def _jsonl_bytes(records: list) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _write_format(tmp_path, fmt: str, rows: list[dict]):
    if fmt == "csv":
        return _write(tmp_path, "data.csv", _csv_bytes(rows))
    if fmt == "tsv":
        return _write(tmp_path, "data.tsv", _csv_bytes(rows, delimiter="\t"))
    if fmt == "jsonl":
        return _write(tmp_path, "data.jsonl", _jsonl_bytes(rows))
    if fmt == "json":
        return _write(tmp_path, "data.json", json.dumps(rows, indent=2, ensure_ascii=False).encode())
    if fmt == "parquet":
        path = tmp_path / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    assert fmt == "zip"
    return _zip(tmp_path, "data.zip", {"export/data.jsonl": _jsonl_bytes(rows), "export/README.txt": b"hello"})


def _zip(tmp_path, name: str, members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", compression) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def _run(path, modality: str = "instruction", **kwargs) -> tuple[IngestReport, list[pa.Table]]:
    tables: list[pa.Table] = []
    report = ingest(str(path), filename=kwargs.pop("filename", path.name), modality=MODALITIES[modality],
                    write_shard=tables.append, **kwargs)
    return report, tables


def _rows(tables: list[pa.Table]) -> list[dict]:
    return [row for table in tables for row in table.to_pylist()]


def _png(color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


# Formats and modalities.


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json", "parquet", "zip"])
@pytest.mark.parametrize("modality", ["instruction", "classification"])
def test_every_format_gives_the_same_checked_rows_and_content_hash(tmp_path, fmt, modality):
    rows = ROWS[modality]
    path = _write_format(tmp_path, fmt, rows)

    report, tables = _run(path, modality)

    assert report.format == fmt
    assert (report.rows_read, report.accepted, report.rejected, report.shards) == (3, 3, 0, 1)
    assert tables[0].schema == MODALITIES[modality].arrow_schema()
    assert _rows(tables) == rows
    assert report.content_hash == _canonical_hash(rows)
    assert report.mapping == {name: name for name in rows[0]}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_sniff_reports_format_columns_mapping_and_a_sample(tmp_path, fmt):
    path = _write_format(tmp_path, fmt, INSTRUCTION_ROWS)

    found = sniff(str(path), filename=path.name, modality=MODALITIES["instruction"])

    assert found.format == fmt
    assert found.encoding == (None if fmt == "parquet" else "utf-8")
    assert found.columns == ["prompt", "response", "system"]
    assert found.mapping == {"prompt": "prompt", "response": "response", "system": "system"}
    assert found.sample[0] == INSTRUCTION_ROWS[0]
    assert len(found.sample) == 3


def test_sniff_sample_holds_at_most_five_rows_and_reads_only_the_start(tmp_path):
    # A stray quote 2 MB in: sniff reads about 1 MB and never sees it; ingest does.
    good = "".join(f"prompt {i},response {i}\n" for i in range(120_000))
    path = _write(tmp_path, "big.csv", f"prompt,response\n{good}x,\"broken\"quote\n".encode())

    found = sniff(str(path), filename="big.csv", modality=MODALITIES["instruction"])

    assert len(found.sample) == 5
    with pytest.raises(IngestError) as raised:
        _run(path)
    assert raised.value.line == 120_002


def test_format_is_taken_from_content_when_the_extension_says_nothing(tmp_path):
    jsonl = _write(tmp_path, "upload.txt", _jsonl_bytes(INSTRUCTION_ROWS))
    tsv = _write(tmp_path, "upload", _csv_bytes(INSTRUCTION_ROWS, delimiter="\t"))
    parquet = tmp_path / "upload.bin"
    pq.write_table(pa.Table.from_pylist(INSTRUCTION_ROWS), parquet)

    assert _run(jsonl)[0].format == "jsonl"
    assert _run(tsv)[0].format == "tsv"
    assert _run(parquet)[0].format == "parquet"


def test_declared_format_wins_over_the_extension(tmp_path):
    path = _write(tmp_path, "data.csv", _jsonl_bytes(INSTRUCTION_ROWS))

    report, tables = _run(path, declared_format="jsonl")

    assert report.format == "jsonl"
    assert _rows(tables) == INSTRUCTION_ROWS


def test_json_file_holding_json_lines_is_read_as_json_lines(tmp_path):
    path = _write(tmp_path, "data.json", _jsonl_bytes(INSTRUCTION_ROWS))

    report, tables = _run(path)

    assert report.format == "jsonl"
    assert _rows(tables) == INSTRUCTION_ROWS


def test_json_array_records_spanning_read_chunks_parse_the_same(tmp_path, monkeypatch):
    rows = [{"prompt": f"p{i} " + "x" * (i * 7), "response": f"r{i}", "system": None} for i in range(40)]
    path = _write(tmp_path, "data.json", json.dumps(rows, indent=1).encode())
    expected, _ = _run(path)
    monkeypatch.setattr(ingest_module, "_READ_CHUNK", 7)

    report, tables = _run(path)

    assert _rows(tables) == rows
    assert report.content_hash == expected.content_hash == _canonical_hash(rows)


def test_json_array_gives_each_record_its_line_and_rejects_non_objects(tmp_path):
    path = _write(tmp_path, "data.json", b'[\n{"prompt": "a", "response": "b"},\n42,\n{"prompt": "c"}\n]\n')

    report, _ = _run(path)

    assert report.accepted == 1
    assert report.rejected_samples == [
        {"row": 2, "line": 3, "field": None, "reason": "not a JSON object"},
        {"row": 3, "line": 4, "field": "response", "reason": "missing"},
    ]


def test_json_array_syntax_error_stops_the_ingest_with_its_line(tmp_path):
    path = _write(tmp_path, "data.json", b'[\n{"prompt": "a", "response": "b"},\n{"prompt": "c",, }\n]')

    with pytest.raises(IngestError) as raised:
        _run(path)

    assert raised.value.code == "unparseable"
    assert raised.value.line == 3


def test_csv_quoted_fields_keep_newlines_and_rows_know_their_first_line(tmp_path):
    data = b'prompt,response\n"first\nsecond",ok\n,missing prompt\nthird,ok\n'
    path = _write(tmp_path, "data.csv", data)

    report, tables = _run(path)

    assert [row["prompt"] for row in _rows(tables)] == ["first\nsecond", "third"]
    assert report.rejected_samples == [{"row": 2, "line": 4, "field": "prompt", "reason": "missing"}]


def test_csv_with_semicolons_is_read_with_semicolons(tmp_path):
    path = _write(tmp_path, "data.csv", b"prompt;response\nhello, world;hi\n")

    _report, tables = _run(path)

    assert _rows(tables) == [{"prompt": "hello, world", "response": "hi", "system": None}]


def test_csv_row_with_a_different_field_count_is_rejected(tmp_path):
    path = _write(tmp_path, "data.csv", b"prompt,response\na,b\nc,d,e\n")

    report, _ = _run(path)

    assert report.accepted == 1
    assert report.rejected_samples[0]["reason"] == "3 fields where the header has 2"


def test_classification_csv_labels_split_on_pipes_or_read_as_json_lists(tmp_path):
    data = 'text,labels\none,a|b\ntwo," c | | d "\nthree,"[""e"", ""f|g""]"\nfour,single\nfive,"[broken"\n'
    path = _write(tmp_path, "data.csv", data.encode())

    report, tables = _run(path, "classification")

    assert [row["labels"] for row in _rows(tables)] == [["a", "b"], ["c", "d"], ["e", "f|g"], ["single"]]
    assert report.rejected_samples[0]["field"] == "labels"
    assert report.rejected_samples[0]["reason"].startswith("invalid JSON list")


def test_classification_json_string_label_is_one_label_and_numbers_pass_to_row_check(tmp_path):
    path = _write(tmp_path, "data.jsonl", _jsonl_bytes([{"text": "x", "labels": "a|b"}, {"text": "y", "labels": [3]}]))

    _report, tables = _run(path, "classification")

    assert [row["labels"] for row in _rows(tables)] == [["a|b"], ["3"]]


def test_chat_messages_come_from_a_json_list_in_csv_and_as_they_are_from_jsonl(tmp_path):
    messages = [{"role": "user", "content": "你好, hi"}, {"role": "assistant", "content": "Hello!"}]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([["messages"], [json.dumps(messages, ensure_ascii=False)], ["not json"]])
    csv_path = _write(tmp_path, "chat.csv", buffer.getvalue().encode())
    jsonl_path = _write(tmp_path, "chat.jsonl", _jsonl_bytes([{"messages": messages}]))

    csv_report, csv_tables = _run(csv_path, "chat")
    jsonl_report, jsonl_tables = _run(jsonl_path, "chat")

    assert _rows(csv_tables) == _rows(jsonl_tables) == [{"messages": messages}]
    assert csv_report.content_hash == jsonl_report.content_hash
    assert csv_report.rejected_samples[0]["field"] == "messages"
    assert csv_report.rejected_samples[0]["reason"].startswith("invalid JSON")


def test_parquet_values_pass_as_they_are_so_numbers_for_text_are_rejected(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"Prompt": ["a", "b"], "answer": ["x", None], "n": [1, 2]}), path)

    report, tables = _run(path, column_mapping={"response": "answer"})
    numbers, _ = _run(path, column_mapping={"prompt": "n", "response": "answer"})

    assert report.mapping == {"prompt": "Prompt", "response": "answer"}
    assert _rows(tables) == [{"prompt": "a", "response": "x", "system": None}]
    assert report.rejected_samples == [{"row": 2, "line": None, "field": "response", "reason": "missing"}]
    assert numbers.accepted == 0
    assert numbers.rejected_samples[0]["reason"] == "must be text, not int"


# Encodings.


@pytest.mark.parametrize(("encoding", "prefix"), [("utf-8", b""), ("utf-8-sig", b"\xef\xbb\xbf"), ("gb18030", b"")])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_chinese_text_round_trips_exactly_in_each_encoding(tmp_path, encoding, prefix, fmt):
    rows = [{"text": "中华人民共和国合同法第一条，为了保护合同当事人的合法权益。"},
            {"text": "租赁期限不得超过二十年；“引号”与 ASCII 混排 ok"}]
    text = (_csv_bytes(rows) if fmt == "csv" else _jsonl_bytes(rows)).decode()
    path = _write(tmp_path, f"data.{fmt}", prefix + text.encode("gb18030" if encoding == "gb18030" else "utf-8"))

    report, tables = _run(path, "text")

    assert report.encoding == encoding
    assert _rows(tables) == rows
    assert report.content_hash == _canonical_hash(rows)


@pytest.mark.parametrize(("encoding", "text"), [
    ("big5", "租賃期限不得超過二十年。這是繁體中文的測試。"),
    ("cp1252", "J'ai mangé une crème brûlée à Noël; c'est très français et délicieux. Naïveté"),
])
def test_other_encodings_fall_to_charset_normalizer_and_round_trip(tmp_path, encoding, text):
    path = _write(tmp_path, "data.csv", f"text\n{text}\n".encode(encoding))

    report, tables = _run(path, "text")

    assert report.encoding == encoding
    assert _rows(tables) == [{"text": text}]


def test_utf8_header_with_bom_still_matches_the_column(tmp_path):
    path = _write(tmp_path, "data.csv", b"\xef\xbb\xbftext\nhello\n")

    found = sniff(str(path), filename="data.csv", modality=MODALITIES["text"])

    assert found.columns == ["text"]
    assert found.encoding == "utf-8-sig"


@pytest.mark.parametrize("encoding", ["utf-8", "gb18030"])
def test_byte_that_does_not_decode_after_the_first_megabyte_stops_with_its_offset(tmp_path, encoding):
    head = "text\n" + "".join(f"第{i}行\n" for i in range(200_000))
    data = head.encode(encoding)
    assert len(data) > ingest_module.SNIFF_BYTES
    # 0xFF is no lead byte in UTF-8 and none in GB18030.
    path = _write(tmp_path, "data.csv", data + b"caf\xff\n")

    found = sniff(str(path), filename="data.csv", modality=MODALITIES["text"])
    with pytest.raises(IngestError) as raised:
        _run(path, "text")

    assert found.encoding == encoding
    assert raised.value.code == "encoding"
    assert raised.value.byte == len(data) + 3


def test_bytes_no_encoding_explains_are_refused(tmp_path):
    # Latin-1 range bytes with C1 controls: not UTF-8, not GB18030, and charset-normalizer gives up.
    path = _write(tmp_path, "data.csv", b"text\n" + bytes(range(0x80, 0x100)) + b"\n")

    with pytest.raises(IngestError) as raised:
        sniff(str(path), filename="data.csv", modality=MODALITIES["text"])

    assert raised.value.code == "encoding"


def test_binary_file_is_not_taken_for_text(tmp_path):
    path = _write(tmp_path, "data.csv", b"text\n\x00\x01\x02\x00binary")

    with pytest.raises(IngestError) as raised:
        sniff(str(path), filename="data.csv", modality=MODALITIES["text"])

    assert raised.value.code == "format"


def test_text_with_no_recognisable_format_is_refused(tmp_path):
    path = _write(tmp_path, "notes.txt", b"just some words\nand more words\n")

    with pytest.raises(IngestError) as raised:
        sniff(str(path), filename="notes.txt", modality=MODALITIES["text"])

    assert raised.value.code == "format"


# Mapping.


def test_explicit_mapping_and_case_insensitive_names_resolve_the_columns(tmp_path):
    path = _write(tmp_path, "data.csv", b"Question,Answer,SYSTEM\nq,a,s\n")

    report, tables = _run(path, column_mapping={"prompt": "Question", "response": "Answer"})

    assert report.mapping == {"prompt": "Question", "response": "Answer", "system": "SYSTEM"}
    assert _rows(tables) == [{"prompt": "q", "response": "a", "system": "s"}]


def test_mapping_naming_a_column_the_file_lacks_is_a_mapping_error(tmp_path):
    path = _write(tmp_path, "data.csv", b"prompt,response\nq,a\n")

    with pytest.raises(IngestError) as raised:
        sniff(str(path), filename="data.csv", modality=MODALITIES["instruction"],
              column_mapping={"response": "answer"})

    assert (raised.value.code, raised.value.field) == ("mapping", "response")
    assert "'answer'" in raised.value.message


def test_required_field_without_a_column_is_a_mapping_error_naming_it(tmp_path):
    path = _write(tmp_path, "data.jsonl", _jsonl_bytes([{"prompt": "q", "answer": "a"}]))

    with pytest.raises(IngestError) as raised:
        _run(path)

    assert (raised.value.code, raised.value.field) == ("mapping", "response")
    assert "'answer'" in raised.value.message  # the file's columns are listed


def test_mapping_to_a_field_the_modality_lacks_is_a_mapping_error(tmp_path):
    path = _write(tmp_path, "data.csv", b"prompt,response\nq,a\n")

    with pytest.raises(IngestError) as raised:
        _run(path, column_mapping={"answer": "response"})

    assert (raised.value.code, raised.value.field) == ("mapping", "answer")


# Per-row rejections.


def test_invalid_json_line_is_rejected_with_its_line_and_the_rest_is_kept(tmp_path):
    data = _jsonl_bytes(INSTRUCTION_ROWS[:1]) + b"\n" + b'{"prompt": "a", "response": \n' + b"[1, 2]\n" \
        + _jsonl_bytes(INSTRUCTION_ROWS[1:])
    path = _write(tmp_path, "data.jsonl", data)

    report, tables = _run(path)

    assert _rows(tables) == INSTRUCTION_ROWS
    assert (report.rows_read, report.accepted, report.rejected) == (5, 3, 2)
    first, second = report.rejected_samples
    assert (first["row"], first["line"], first["field"]) == (2, 3, None)
    assert first["reason"].startswith("invalid JSON: ")
    assert (second["row"], second["line"], second["reason"]) == (3, 4, "not a JSON object")


def test_jsonl_whose_first_records_are_all_broken_is_refused_by_sniff(tmp_path):
    path = _write(tmp_path, "data.jsonl", b"not json\n{broken\n" * 3 + _jsonl_bytes(INSTRUCTION_ROWS))
    readable = _write(tmp_path, "readable.jsonl", b"not json\n{broken\n" + _jsonl_bytes(INSTRUCTION_ROWS))

    with pytest.raises(IngestError) as raised:
        sniff(str(path), filename="data.jsonl", modality=MODALITIES["instruction"])
    found = sniff(str(readable), filename="readable.jsonl", modality=MODALITIES["instruction"])

    assert (raised.value.code, raised.value.line) == ("unparseable", 1)
    assert "invalid JSON" in raised.value.message
    assert found.sample == INSTRUCTION_ROWS


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json"])
def test_row_over_the_size_limit_is_rejected_and_the_next_rows_are_read(tmp_path, fmt):
    rows = [INSTRUCTION_ROWS[0], {"prompt": "x" * 5000, "response": "y", "system": None}, INSTRUCTION_ROWS[0]]
    path = _write_format(tmp_path, fmt, rows)

    report, tables = _run(path, limits=IngestLimits(max_row_bytes=1000))

    assert _rows(tables) == [INSTRUCTION_ROWS[0], INSTRUCTION_ROWS[0]]
    assert report.rejected_samples[0]["row"] == 2
    assert report.rejected_samples[0]["reason"] == "row larger than 1000 bytes"


def test_jsonl_line_far_over_the_limit_is_skipped_without_being_held(tmp_path):
    huge = b'{"prompt": "' + b"x" * 3_000_000 + b'", "response": "y"}\n'
    data = _jsonl_bytes(INSTRUCTION_ROWS[:1]) + huge + _jsonl_bytes(INSTRUCTION_ROWS[1:])
    path = _write(tmp_path, "data.jsonl", data)

    report, tables = _run(path, limits=IngestLimits(max_row_bytes=1000))

    assert _rows(tables) == INSTRUCTION_ROWS
    assert report.rejected_samples == [{"row": 2, "line": 2, "field": None, "reason": "row larger than 1000 bytes"}]


@pytest.mark.parametrize("chunk", [97, 4096, 1024 * 1024])
def test_jsonl_read_in_chunks_keeps_every_row_rejection_line_number_and_the_hash(tmp_path, monkeypatch, chunk):
    """JSON Lines past the first records is read a chunk at a time, and a chunk of clean rows is
    taken column by column: whatever the chunk size, and wherever the broken lines fall, the rows,
    the rejections with their row and line numbers, the shards and the hash are those of reading
    line by line."""
    monkeypatch.setattr(ingest_module, "_READ_CHUNK", chunk)
    lines: list[bytes] = []
    accepted: list[dict] = []
    rejected: list[tuple[int, int, str | None, str]] = []  # row, line, field, reason start
    for index in range(3000):
        row = {"Prompt": f"question {index} " * (index % 7 + 1), "response": f"答案 {index}"}
        if index % 3 == 0:
            row["system"] = "You are terse."
        kind = index % 401
        if kind == 50:
            lines.append(b"")  # a blank line: no record, but it has a line number
        if kind == 100:
            lines.append(b'{"Prompt": "cut off", "response": ')
            rejected.append((len(accepted) + len(rejected) + 1, len(lines), None, "invalid JSON"))
        elif kind == 200:
            lines.append(b'{"Prompt": "' + b"x" * 5000 + b'", "response": "long"}')
            rejected.append((len(accepted) + len(rejected) + 1, len(lines), None, "row larger"))
        elif kind == 300:
            lines.append(orjson.dumps({**row, "Prompt": "   "}))
            rejected.append((len(accepted) + len(rejected) + 1, len(lines), "prompt", "missing"))
        elif kind == 400:
            lines.append(orjson.dumps({**row, "response": "nul \x00 here"}))
            rejected.append((len(accepted) + len(rejected) + 1, len(lines), "response", "contains a NUL"))
        else:
            lines.append(orjson.dumps(row) + (b"\r" if index % 5 == 0 else b""))
            accepted.append({"prompt": row["Prompt"], "response": row["response"], "system": row.get("system")})
    path = _write(tmp_path, "data.jsonl", b"\n".join(lines) + b"\n")

    report, tables = _run(path, rows_per_shard=700, limits=IngestLimits(max_row_bytes=1000, max_rejected_kept=1000))

    assert _rows(tables) == accepted
    assert [table.num_rows for table in tables] == [700] * (len(accepted) // 700) + [len(accepted) % 700]
    assert report.content_hash == _canonical_hash(accepted)
    assert (report.rows_read, report.accepted, report.rejected) == (len(accepted) + len(rejected), len(accepted),
                                                                    len(rejected))
    found = [(sample["row"], sample["line"], sample["field"], sample["reason"]) for sample in report.rejected_samples]
    assert [(row, line, field) for row, line, field, _ in found] == [(row, line, field) for row, line, field, _ in rejected]
    assert all(reason.startswith(start) for (*_, reason), (*_, start) in zip(found, rejected))


def test_jsonl_over_the_row_limit_in_a_clean_chunk_is_refused(tmp_path):
    path = _write(tmp_path, "data.jsonl", _jsonl_bytes([{"text": f"row {i}"} for i in range(500)]))

    with pytest.raises(IngestError) as raised:
        _run(path, "text", limits=IngestLimits(max_rows=499))
    report, _ = _run(path, "text", limits=IngestLimits(max_rows=500))

    assert raised.value.code == "too_many_rows"
    assert report.accepted == 500


def test_rejections_are_all_counted_and_only_the_first_are_kept(tmp_path):
    path = _write(tmp_path, "data.jsonl", _jsonl_bytes([{"prompt": "", "response": "r"}] * 30 + INSTRUCTION_ROWS))

    report, _ = _run(path, limits=IngestLimits(max_rejected_kept=10))

    assert (report.rejected, report.accepted, len(report.rejected_samples)) == (30, 3, 10)
    assert [sample["row"] for sample in report.rejected_samples] == list(range(1, 11))


# Whole-file errors.


def test_malformed_csv_quote_stops_the_ingest_with_its_line(tmp_path):
    path = _write(tmp_path, "data.csv", b'prompt,response\nq,a\nq2,"a2"x\nq3,a3\n')

    with pytest.raises(IngestError) as raised:
        _run(path)

    assert (raised.value.code, raised.value.line) == ("unparseable", 3)


def test_csv_quote_left_open_to_the_end_stops_the_ingest(tmp_path):
    path = _write(tmp_path, "data.csv", b'prompt,response\nq,a\nq2,"never closed\nq3,a3\n')

    with pytest.raises(IngestError) as raised:
        _run(path)

    assert raised.value.code == "unparseable"


def test_csv_quote_left_open_stops_once_the_record_passes_the_hard_cap(tmp_path):
    rows = "".join(f"q{i},a{i}\n" for i in range(5000))
    path = _write(tmp_path, "data.csv", f'prompt,response\nq,"open\n{rows}'.encode())

    with pytest.raises(IngestError) as raised:
        _run(path, limits=IngestLimits(max_row_bytes=100))

    assert raised.value.line == 2
    assert "quote" in raised.value.message


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path):
    path = _write(tmp_path, "data.jsonl", _jsonl_bytes(INSTRUCTION_ROWS))

    with pytest.raises(IngestError) as raised:
        sniff(str(path), filename="data.jsonl", modality=MODALITIES["instruction"],
              limits=IngestLimits(max_file_bytes=100))

    assert raised.value.code == "too_large"


def test_file_over_the_row_limit_is_refused(tmp_path):
    path = _write(tmp_path, "data.jsonl", _jsonl_bytes(INSTRUCTION_ROWS))

    with pytest.raises(IngestError) as raised:
        _run(path, limits=IngestLimits(max_rows=2))

    assert raised.value.code == "too_many_rows"


@pytest.mark.parametrize(("name", "data"), [
    ("data.csv", b""),
    ("data.csv", b"prompt,response\n"),
    ("data.jsonl", b"\n\n  \n"),
    ("data.json", b"[ ]"),
])
def test_empty_file_or_header_without_rows_is_refused_as_empty(tmp_path, name, data):
    path = _write(tmp_path, name, data)

    with pytest.raises(IngestError) as raised:
        sniff(str(path), filename=name, modality=MODALITIES["instruction"])

    assert raised.value.code == "empty"


def test_parquet_without_rows_is_refused_as_empty(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)

    with pytest.raises(IngestError) as raised:
        _run(path, "text")

    assert raised.value.code == "empty"


def test_unknown_declared_format_is_refused(tmp_path):
    path = _write(tmp_path, "data.csv", b"text\nhello\n")

    with pytest.raises(IngestError) as raised:
        _run(path, "text", declared_format="xlsx")

    assert raised.value.code == "format"


def test_image_caption_outside_a_zip_is_refused(tmp_path):
    path = _write(tmp_path, "data.csv", b"image,caption\na.png,a cat\n")

    with pytest.raises(IngestError) as raised:
        sniff(str(path), filename="data.csv", modality=MODALITIES["image_caption"])

    assert raised.value.code == "format"


# Shards, hash, progress.


def test_shards_split_at_rows_per_shard_and_none_is_written_without_rows(tmp_path):
    rows = [{"text": f"row {i}"} for i in range(25)]
    path = _write(tmp_path, "data.jsonl", _jsonl_bytes(rows))
    broken = _write(tmp_path, "broken.jsonl", _jsonl_bytes([{"text": 1}, {"text": ""}]))

    report, tables = _run(path, "text", rows_per_shard=10)
    empty_report, empty_tables = _run(broken, "text", rows_per_shard=10)

    assert [table.num_rows for table in tables] == [10, 10, 5]
    assert report.shards == 3
    assert all(table.schema == MODALITIES["text"].arrow_schema() for table in tables)
    assert _rows(tables) == rows
    assert (empty_report.shards, empty_tables, empty_report.accepted) == (0, [], 0)
    assert empty_report.content_hash == hashlib.sha256().hexdigest()


def test_content_hash_depends_on_the_rows_and_their_order_only(tmp_path):
    forward = _write(tmp_path, "a.jsonl", _jsonl_bytes(INSTRUCTION_ROWS))
    spaced = _write(tmp_path, "b.jsonl", b"\n".join(json.dumps(row, indent=None).encode() for row in INSTRUCTION_ROWS))
    backward = _write(tmp_path, "c.jsonl", _jsonl_bytes(INSTRUCTION_ROWS[::-1]))

    assert _run(forward)[0].content_hash == _run(spaced)[0].content_hash
    assert _run(forward)[0].content_hash != _run(backward)[0].content_hash


def test_progress_rises_to_one(tmp_path):
    rows = [{"text": f"row number {i} " * 5} for i in range(20_000)]
    path = _write(tmp_path, "data.jsonl", _jsonl_bytes(rows))
    seen: list[float] = []

    report, _ = _run(path, "text", progress=seen.append)

    assert seen[-1] == 1.0
    assert seen == sorted(seen)
    assert report.bytes_read == path.stat().st_size


# Zips.


@pytest.mark.parametrize("piece_bytes", [None, 64])
def test_image_caption_zip_stores_each_image_once_and_rejects_bad_ones(tmp_path, monkeypatch, piece_bytes):
    if piece_bytes:  # the manifest is then read a little at a time, between the images
        for name in ("_READ_CHUNK", "_INFLATE_CHUNK", "SNIFF_BYTES"):
            monkeypatch.setattr(ingest_module, name, piece_bytes)
    manifest = _jsonl_bytes([
        {"image": "images/cat.png", "caption": "a cat"},
        {"image": "images/cat.png", "caption": "the same cat"},
        {"image": "images/dog.png", "caption": "a dog"},
        {"image": "images/broken.png", "caption": "not an image"},
        {"image": "images/missing.png", "caption": "nowhere"},
    ])
    path = _zip(tmp_path, "photos.zip", {
        "photos/manifest.jsonl": manifest, "photos/images/cat.png": _png("red"),
        "photos/images/dog.png": _png("blue"), "photos/images/broken.png": b"\x89PNG not really",
        "__MACOSX/photos/._manifest.jsonl": b"junk",
    })
    stored: dict[str, bytes] = {}

    def write_image(name: str, data: bytes) -> str:
        stored[name] = data
        return f"img/{hashlib.sha256(data).hexdigest()[:16]}.png"

    report, tables = _run(path, "image_caption", write_image=write_image)

    assert report.format == "zip" and report.encoding is None
    assert sorted(stored) == ["photos/images/cat.png", "photos/images/dog.png"]
    assert report.images == 2
    rows = _rows(tables)
    assert [row["caption"] for row in rows] == ["a cat", "the same cat", "a dog"]
    assert rows[0]["image"] == rows[1]["image"] != rows[2]["image"]
    assert [(sample["row"], sample["line"], sample["field"]) for sample in report.rejected_samples] == [
        (4, 4, "image"), (5, 5, "image")]
    assert report.rejected_samples[0]["reason"].startswith("not a readable image")


def test_image_caption_zip_with_a_csv_manifest_in_its_root(tmp_path):
    path = _zip(tmp_path, "photos.zip", {"manifest.csv": b"image,caption\ncat.png,a cat\n", "cat.png": _png()})

    found = sniff(str(path), filename="photos.zip", modality=MODALITIES["image_caption"])
    report, tables = _run(path, "image_caption", write_image=lambda name, data: f"k/{name}")

    assert found.sample == [{"image": "cat.png", "caption": "a cat"}]
    assert _rows(tables) == [{"image": "k/cat.png", "caption": "a cat"}]


def test_zip_without_a_manifest_is_refused(tmp_path):
    path = _zip(tmp_path, "photos.zip", {"a.csv": b"image,caption\n", "b.csv": b"image,caption\n", "cat.png": _png()})

    with pytest.raises(IngestError) as raised:
        sniff(str(path), filename="photos.zip", modality=MODALITIES["image_caption"])

    assert raised.value.code == "format"


@pytest.mark.parametrize("member", ["../evil.csv", "/etc/evil.csv", "data/../../evil.csv", "C:/evil.csv",
                                    "data\\evil.csv"])
def test_zip_member_escaping_its_folder_is_refused(tmp_path, member):
    path = _zip(tmp_path, "data.zip", {"data.csv": b"text\nhello\n", member: b"text\nhello\n"})

    with pytest.raises(IngestError) as raised:
        sniff(str(path), filename="data.zip", modality=MODALITIES["text"])

    assert raised.value.code == "zip_unsafe"


def test_zip_symlink_member_is_refused(tmp_path):
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.csv", b"text\nhello\n")
        link = zipfile.ZipInfo("link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, b"/etc/passwd")

    with pytest.raises(IngestError) as raised:
        _run(path, "text")

    assert raised.value.code == "zip_unsafe"


def test_zip_of_a_highly_compressible_large_member_is_a_bomb(tmp_path):
    path = _zip(tmp_path, "data.zip", {"data.csv": b"text\n" + b"a" * 50_000_000})
    assert path.stat().st_size < 200_000

    with pytest.raises(IngestError) as raised:
        sniff(str(path), filename="data.zip", modality=MODALITIES["text"])

    assert raised.value.code == "zip_bomb"


def test_zip_with_too_many_members_or_too_many_bytes_is_a_bomb(tmp_path):
    path = _zip(tmp_path, "data.zip", {"data.csv": b"text\nhello\n", **{f"x/{i}.txt": b"x" * 1000 for i in range(5)}})

    with pytest.raises(IngestError) as members:
        _run(path, "text", limits=IngestLimits(zip_max_members=5))
    with pytest.raises(IngestError) as size:
        _run(path, "text", limits=IngestLimits(zip_max_uncompressed_bytes=4000))

    assert members.value.code == size.value.code == "zip_bomb"


def test_zip_member_whose_header_understates_its_size_stops_at_the_declared_size(tmp_path):
    path = _zip(tmp_path, "data.zip", {"data.jsonl": _jsonl_bytes([{"text": "x" * 100}] * 50_000)})
    data = bytearray(path.read_bytes())
    # Claim 1000 bytes in both the local header (size at +22) and the central directory (at +24).
    struct.pack_into("<I", data, 22, 1000)
    directory = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, directory + 24, 1000)
    path.write_bytes(bytes(data))
    assert zipfile.ZipFile(path).infolist()[0].file_size == 1000

    with pytest.raises(IngestError) as raised:
        _run(path, "text")

    assert raised.value.code == "zip_bomb"
    assert "declares" in raised.value.message


def test_zip_holding_one_data_file_is_read_like_that_file(tmp_path):
    rows = [{"text": "hello"}, {"text": "你好"}]
    path = _zip(tmp_path, "data.zip", {"export/data.csv": _csv_bytes(rows), "export/notes.md": b"# notes"})

    report, tables = _run(path, "text")

    assert report.columns == ["text"]
    assert _rows(tables) == rows
    assert report.content_hash == _canonical_hash(rows)
