"""What a backfill reads: `Row`s (one input each, or why it cannot be sent) from a `Source`."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from streams.errors import ErrorCode, KinferError


class SourceError(KinferError):
    """An input that cannot be read at all (so no row of it can be)."""


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one row was not (or could not be) predicted: an error code and a message."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Row:
    """One input row: what to send, or why it cannot be sent."""

    #: the row's number in the input, from 0 (the default id)
    number: int
    id: Any
    #: what the model gets (None for a row with an error)
    input: Any
    #: the input position just past this row (JSON-able), where a resume starts
    position: Any
    #: progress-bar units done once this row is (bytes, rows or records)
    progress: int
    error: RowError | None = None


class Source(Protocol):
    """A backfill input: a stream of rows, resumable from a row's position."""

    #: what the input is, for messages ("orders.csv", "topic orders")
    name: str
    #: the progress bar's unit ("B", "rows", "records") and total (None when unknown)
    progress_unit: str
    progress_total: int | None

    def job(self) -> dict[str, Any]:
        """What identifies this input and how it is read, for the state's job."""
        ...

    def rows(self, position: Any, number: int) -> AsyncGenerator[Row, None]:
        """The rows from ``position`` (None: the start) on, the first numbered ``number``."""
        ...


def check_input(value: Any, where: str, column: str) -> RowError | None:
    """The error of a row whose input is ``value``, or None: null and blank texts are refused.

    Anything but a string (an image as nested lists) is sent as it is, for the model to judge.
    """
    if value is None:
        return RowError(ErrorCode.INVALID_REQUEST, f"{where}: {column} is null")
    if isinstance(value, str) and not value.strip():
        return RowError(ErrorCode.INVALID_REQUEST, f"{where}: {column} is an empty text")
    return None


def file_size(path: Path) -> int:
    """``path``'s size; SourceError if it cannot be read."""
    try:
        return path.stat().st_size
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None


def file_job(path: Path, kind: str, text: str, id_column: str | None) -> dict[str, Any]:
    """What identifies a file input for the state: the path, its size and time, the columns."""
    stat = path.stat()
    return {
        "input": str(path.resolve()),
        "format": kind,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "text": text,
        "id": id_column,
    }
