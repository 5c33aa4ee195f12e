"""Backfill readers: JSONL, CSV/TSV, Parquet rows, their error rows, and resuming at a position."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streams.backfill.parquet_source import ParquetSource
from streams.backfill.sources import (
    CsvSource,
    JsonlSource,
    Row,
    Source,
    SourceError,
    format_of,
    open_file_source,
)


async def read(source: Source, position: Any = None, number: int = 0) -> list[Row]:
    return [row async for row in source.rows(position, number)]


async def assert_resumes_anywhere(source: Source) -> list[Row]:
    """Resuming after any row gives exactly the rows after it (same ids, inputs, errors)."""
    rows = await read(source)
    for k in range(1, len(rows) + 1):
        rest = await read(source, rows[k - 1].position, k)
        assert rest == rows[k:], f"resume after row {k - 1}"
    return rows


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


async def test_jsonl_rows_ids_and_error_rows(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [
            json.dumps({"text": "first", "key": "a"}),
            "",  # blank: no row
            "{not json",
            json.dumps({"text": "", "key": "c"}),
            json.dumps({"body": "no text", "key": "d"}),
            json.dumps({"text": "ok", "key": None}),
            json.dumps({"text": [[0, 1], [2, 3]], "key": "img"}),  # not a string: sent as is
            json.dumps({"text": "東京", "key": 7}),
        ],
    )
    rows = await assert_resumes_anywhere(JsonlSource(path, "text", "key"))
    assert [(r.number, r.id, r.input) for r in rows] == [
        (0, "a", "first"),
        (1, 1, None),
        (2, "c", None),
        (3, "d", None),
        (4, 4, None),
        (5, "img", [[0, 1], [2, 3]]),
        (6, 7, "東京"),
    ]
    errors = {r.number: (r.error.code, r.error.message) for r in rows if r.error}
    assert errors[1][0] == "INVALID_JSON"
    assert errors[1][1].startswith("row 1 (line 3) is not JSON")
    assert errors[2] == ("INVALID_REQUEST", "row 2 (line 4): $.text is an empty text")
    assert errors[3] == (
        "INVALID_REQUEST",
        "row 3 (line 5): $.text matches nothing: $ has no key 'text'",
    )
    assert errors[4] == ("INVALID_REQUEST", "row 4 (line 6): id $.key is null")
    assert rows[-1].progress == path.stat().st_size


async def test_jsonl_ids_default_to_the_row_number_and_paths_reach_nested_text(
    tmp_path: Path,
) -> None:
    lines = [json.dumps({"body": {"parts": [f"text {i}"]}}) for i in range(5)]
    source = open_file_source(
        write_jsonl(tmp_path / "in.ndjson", lines), text="$.body.parts[0]", id_column=None
    )
    rows = await read(source)
    assert [(r.id, r.input) for r in rows] == [(i, f"text {i}") for i in range(5)]


async def test_jsonl_whose_first_row_lacks_the_column_is_refused_naming_its_keys(
    tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [json.dumps({"body": "x", "id": 1})])
    with pytest.raises(
        SourceError, match=r"row 0 \(line 1\) has no \$\.text .* keys: 'body', 'id'"
    ):
        await read(JsonlSource(path, "text", None))


def test_a_wildcard_path_is_refused_for_files(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", ["{}"])
    with pytest.raises(SourceError, match=r"no \[\*\] paths"):
        JsonlSource(path, "$.inputs[*]", None)


def write_csv(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file, delimiter=delimiter).writerows(rows)
    return path


async def test_csv_rows_with_quoted_line_breaks_and_bad_rows(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "in.csv",
        [
            ["id", "text", "lang"],
            ["r1", "plain", "en"],
            ["r2", "two\nlines, and a comma", "en"],
            [],
            ["r3", "", "en"],
            ["r4", "too", "many", "fields"],
            ["", "no id", "en"],
            ["r6", "last", "fr"],
        ],
    )
    rows = await assert_resumes_anywhere(CsvSource(path, "text", "id", delimiter=","))
    assert [(r.number, r.id, r.input) for r in rows] == [
        (0, "r1", "plain"),
        (1, "r2", "two\nlines, and a comma"),
        (2, "r3", None),
        (3, 3, None),
        (4, 4, None),
        (5, "r6", "last"),
    ]
    messages = [r.error.message for r in rows if r.error]
    assert messages == [
        "row 2 (line 6): column 'text' is an empty text",
        "row 3 (line 7) has 4 fields, the header 3",
        "row 4 (line 8): id column 'id' is empty",
    ]


async def test_tsv_with_a_bom_and_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "in.tsv"
    path.write_bytes(b"\xef\xbb\xbftext\tn\nhello\t1\n\xff\xfe broken\t2\nbye\t3\n")
    source = open_file_source(path, text="text", id_column=None)
    rows = await assert_resumes_anywhere(source)
    assert [(r.id, r.input) for r in rows] == [(0, "hello"), (1, None), (2, "bye")]
    assert rows[1].error is not None
    assert rows[1].error.message == "row 1 (line 3) is not valid UTF-8"


def test_csv_without_the_column_is_refused_listing_its_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", [["body", "key"], ["x", "1"]])
    with pytest.raises(
        SourceError, match=r"no column 'text' \(--text-column\); its columns: 'body', 'key'"
    ):
        CsvSource(path, "text", None, delimiter=",")
    with pytest.raises(SourceError, match=r"no column 'id' \(--id-column\)"):
        CsvSource(path, "body", "id", delimiter=",")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SourceError, match="is empty: a CSV backfill needs a header row"):
        CsvSource(empty, "text", None, delimiter=",")


async def test_parquet_rows_across_row_groups_resume_mid_group(tmp_path: Path) -> None:
    texts = [f"text {i}" if i % 7 else None for i in range(50)]
    texts[3] = "   "
    table = pa.table({"text": texts, "key": [f"k{i}" for i in range(50)]})
    path = tmp_path / "in.parquet"
    pq.write_table(table, path, row_group_size=12)  # groups of 12, 12, 12, 12, 2
    source = ParquetSource(path, "text", "key")
    assert source.progress_total == 50
    rows = await assert_resumes_anywhere(source)
    assert [r.id for r in rows] == [f"k{i}" for i in range(50)]
    assert [r.input for r in rows] == [None if i == 3 else t for i, t in enumerate(texts)]
    assert [r.number for r in rows if r.error] == [0, 3, 7, 14, 21, 28, 35, 42, 49]
    assert rows[7].error is not None
    assert rows[7].error.message == "row 7: column 'text' is null"
    assert [r.position for r in rows] == list(range(1, 51))


async def test_parquet_non_text_inputs_pass_through(tmp_path: Path) -> None:
    images = [[[float(i)] * 8 for _ in range(8)] for i in range(3)]
    path = tmp_path / "digits.parquet"
    pq.write_table(pa.table({"image": images}), path)
    rows = await read(ParquetSource(path, "image", None))
    assert [r.input for r in rows] == images
    assert [r.id for r in rows] == [0, 1, 2]


def test_parquet_missing_column_and_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": ["x"]}), path)
    with pytest.raises(
        SourceError, match=r"no column 'text' \(--text-column\); its columns: 'body'"
    ):
        ParquetSource(path, "text", None)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match=r"cannot read .*broken\.parquet as Parquet"):
        ParquetSource(broken, "text", None)


def test_format_from_extension_or_option(tmp_path: Path) -> None:
    assert format_of(Path("a.JSONL"), None) == "jsonl"
    assert format_of(Path("a.pq"), None) == "parquet"
    assert format_of(Path("a.txt"), "csv") == "csv"
    with pytest.raises(SourceError, match="use --format"):
        format_of(Path("a.txt"), None)
    with pytest.raises(SourceError, match="cannot read"):
        JsonlSource(tmp_path / "missing.jsonl", "text", None)
