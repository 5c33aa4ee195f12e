"""Backfill inputs read as streams of `Row`s: JSONL, CSV/TSV and (``parquet_source``) Parquet.

No reader loads a file: JSONL and CSV are read line by line, Parquet one batch of a row group at
a time. Each row carries the input position just past it (a byte offset and line number, or a
row index), so an interrupted backfill resumes by seeking there, not by reading again.

A row that cannot be sent (not JSON, no such column, an empty text, a missing id) is a `Row`
with its `RowError`, naming the row (and the line); a file that cannot be read at all, or that
lacks the column everywhere (the first row, the header or the schema says so), raises
`SourceError` instead.
"""

from __future__ import annotations

import codecs
import csv
import sys
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any, Final

import orjson

from streams.backfill.rows import (
    Row,
    RowError,
    Source,
    SourceError,
    check_input,
    file_job,
    file_size,
)
from streams.errors import ErrorCode
from streams.fieldpath import FieldNotFound, FieldPath

__all__ = [
    "FORMATS",
    "CsvSource",
    "JsonlSource",
    "Row",
    "RowError",
    "Source",
    "SourceError",
    "check_input",
    "format_of",
    "open_file_source",
]

#: File formats by name, as `--format` takes them; `format_of` guesses from the extension.
FORMATS: Final = ("jsonl", "csv", "tsv", "parquet")
_EXTENSIONS: Final = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def format_of(path: Path, given: str | None) -> str:
    """The format named by ``given``, else by ``path``'s extension; SourceError if neither."""
    if given is not None:
        return given
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        known = ", ".join(sorted(_EXTENSIONS))
        raise SourceError(
            f"cannot tell the format of {path} from its extension ({known}): use --format"
        )
    return found


def open_file_source(
    path: Path, *, text: str, id_column: str | None, format: str | None = None
) -> Source:
    """The reader for ``path``; ``text`` and ``id_column`` name its columns (JSONL: or paths)."""
    kind = format_of(path, format)
    if kind == "jsonl":
        return JsonlSource(path, text, id_column)
    if kind in ("csv", "tsv"):
        return CsvSource(path, text, id_column, delimiter="," if kind == "csv" else "\t")
    from streams.backfill.parquet_source import ParquetSource  # pyarrow only when needed

    return ParquetSource(path, text, id_column)


def _column_path(name: str) -> FieldPath:
    """A JSONL column: a field path when it starts with ``$``, else one top-level key."""
    return FieldPath.parse(name) if name.startswith("$") else FieldPath.key(name)


class JsonlSource:
    """JSON Lines: one JSON value per line; blank lines are skipped (they are no rows).

    Position: ``[byte offset, line number]`` just past the row.
    """

    progress_unit = "B"

    def __init__(self, path: Path, text: str, id_column: str | None) -> None:
        self.path = path
        self.name = str(path)
        self.text, self.id_column = text, id_column
        self._text = _column_path(text)
        self._id = None if id_column is None else _column_path(id_column)
        if self._text.has_wildcard or (self._id is not None and self._id.has_wildcard):
            raise SourceError("a file backfill takes one text and one id per row: no [*] paths")
        self.progress_total: int | None = file_size(path)

    def job(self) -> dict[str, Any]:
        return file_job(self.path, "jsonl", self.text, self.id_column)

    async def rows(self, position: Any, number: int) -> AsyncGenerator[Row, None]:
        for row in self._rows(position, number):
            yield row

    def _rows(self, position: Any, number: int) -> Iterator[Row]:
        offset, line = (0, 0) if position is None else (int(position[0]), int(position[1]))
        try:
            with self.path.open("rb") as file:
                file.seek(offset)
                for raw in file:
                    offset += len(raw)
                    line += 1
                    if not raw.strip():
                        continue
                    yield self._row(raw, number, line, [offset, line], offset)
                    number += 1
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def _row(self, raw: bytes, number: int, line: int, position: Any, done: int) -> Row:
        where = f"row {number} (line {line})"
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            error = RowError(ErrorCode.INVALID_JSON, f"{where} is not JSON: {exc}")
            return Row(number, number, None, position, done, error)
        try:
            row_id: Any = number if self._id is None else self._id.get(doc)
        except FieldNotFound as exc:
            self._refuse_first(number, where, doc, exc)
            return Row(number, number, None, position, done, _not_found(where, exc))
        try:
            value = self._text.get(doc)
        except FieldNotFound as exc:
            self._refuse_first(number, where, doc, exc)
            return Row(number, row_id, None, position, done, _not_found(where, exc))
        problem = check_input(value, where, self._text.text)
        if problem is None and row_id is None:
            label = self._id.text if self._id is not None else "the id"
            problem = RowError(ErrorCode.INVALID_REQUEST, f"{where}: id {label} is null")
        if row_id is None:
            row_id = number
        return Row(number, row_id, None if problem else value, position, done, problem)

    def _refuse_first(self, number: int, where: str, doc: Any, exc: FieldNotFound) -> None:
        """The first row lacks a column: surely a wrong name, not a bad row. SourceError."""
        if number != 0:
            return
        keys = ", ".join(map(repr, list(doc)[:20])) if isinstance(doc, dict) else "none"
        raise SourceError(
            f"{self.path}: {where} has no {exc.path} ({exc.reason}); its keys: {keys}. "
            "Name the text with --text-column (the id with --id-column)"
        )


def _not_found(where: str, exc: FieldNotFound) -> RowError:
    return RowError(ErrorCode.INVALID_REQUEST, f"{where}: {exc}")


class _Lines:
    """Decoded lines of a binary file for ``csv.reader``, counting bytes and lines as it goes."""

    def __init__(self, file: Any, offset: int, line: int) -> None:
        self.file, self.offset, self.line = file, offset, line
        self.bad_utf8 = False
        self._decode = codecs.getdecoder("utf-8")

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = self.file.readline()
        if not raw:
            raise StopIteration
        if self.offset == 0 and raw.startswith(codecs.BOM_UTF8):
            raw_text = raw[len(codecs.BOM_UTF8) :]
        else:
            raw_text = raw
        self.offset += len(raw)
        self.line += 1
        try:
            text: str = self._decode(raw_text)[0]
        except UnicodeDecodeError:
            self.bad_utf8 = True
            text = raw_text.decode("utf-8", "replace")
        return text


class CsvSource:
    """CSV (or TSV) with a header row naming the columns; blank lines are skipped.

    Quoted fields may hold line breaks. Position: ``[byte offset, line number]`` past the row.
    """

    progress_unit = "B"

    def __init__(self, path: Path, text: str, id_column: str | None, *, delimiter: str) -> None:
        self.path = path
        self.name = str(path)
        self.text, self.id_column, self.delimiter = text, id_column, delimiter
        self.progress_total: int | None = file_size(path)
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long texts are the model's to refuse
        self.header, self._header_end = self._read_header()
        self._text_index = self._index_of(text, "--text-column")
        self._id_index = None if id_column is None else self._index_of(id_column, "--id-column")

    def job(self) -> dict[str, Any]:
        kind = "csv" if self.delimiter == "," else "tsv"
        return file_job(self.path, kind, self.text, self.id_column)

    def _read_header(self) -> tuple[list[str], tuple[int, int]]:
        try:
            with self.path.open("rb") as file:
                lines = _Lines(file, 0, 0)
                for header in csv.reader(lines, delimiter=self.delimiter):
                    if header:
                        return header, (lines.offset, lines.line)
        except (OSError, csv.Error) as exc:
            raise SourceError(f"cannot read the header of {self.path}: {exc}") from None
        raise SourceError(f"{self.path} is empty: a CSV backfill needs a header row")

    def _index_of(self, column: str, option: str) -> int:
        if column in self.header:
            return self.header.index(column)
        names = ", ".join(map(repr, self.header[:30]))
        raise SourceError(f"{self.path} has no column {column!r} ({option}); its columns: {names}")

    async def rows(self, position: Any, number: int) -> AsyncGenerator[Row, None]:
        for row in self._rows(position, number):
            yield row

    def _rows(self, position: Any, number: int) -> Iterator[Row]:
        offset, line = self._header_end if position is None else (position[0], position[1])
        try:
            with self.path.open("rb") as file:
                file.seek(offset)
                lines = _Lines(file, int(offset), int(line))
                reader = csv.reader(lines, delimiter=self.delimiter)
                while True:
                    first_line = lines.line + 1
                    try:
                        fields = next(reader)
                    except StopIteration:
                        return
                    except csv.Error as exc:
                        error = f"row {number} (line {first_line}) is not CSV: {exc}"
                        yield self._bad(number, lines, error)
                        number += 1
                        continue
                    if not fields:
                        continue
                    yield self._row(fields, number, first_line, lines)
                    number += 1
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def _bad(self, number: int, lines: _Lines, message: str) -> Row:
        error = RowError(ErrorCode.INVALID_REQUEST, message)
        return Row(number, number, None, [lines.offset, lines.line], lines.offset, error)

    def _row(self, fields: list[str], number: int, line: int, lines: _Lines) -> Row:
        where = f"row {number} (line {line})"
        if lines.bad_utf8:
            lines.bad_utf8 = False
            return self._bad(number, lines, f"{where} is not valid UTF-8")
        if len(fields) != len(self.header):
            return self._bad(
                number, lines, f"{where} has {len(fields)} fields, the header {len(self.header)}"
            )
        row_id: Any = number if self._id_index is None else fields[self._id_index]
        error = check_input(fields[self._text_index], where, f"column {self.text!r}")
        if error is None and row_id == "":
            error = RowError(
                ErrorCode.INVALID_REQUEST, f"{where}: id column {self.id_column!r} is empty"
            )
        if error is not None:
            row_id = number if row_id == "" else row_id
            return Row(number, row_id, None, [lines.offset, lines.line], lines.offset, error)
        value = fields[self._text_index]
        return Row(number, row_id, value, [lines.offset, lines.line], lines.offset)
