"""Parquet backfill input, read one batch of one row group at a time (only the columns named)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any, Final

from streams.backfill.rows import Row, RowError, SourceError, check_input, file_job
from streams.errors import ErrorCode

#: Rows per Parquet read (one batch of one row group's selected columns in memory).
_PARQUET_BATCH_ROWS: Final = 1024


class ParquetSource:
    """Parquet, read one batch of one row group at a time (only the columns named).

    Position: the index of the next row.
    """

    progress_unit = "rows"

    def __init__(self, path: Path, text: str, id_column: str | None) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.name = str(path)
        self.text, self.id_column = text, id_column
        try:
            self._file = pq.ParquetFile(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise SourceError(f"cannot read {path} as Parquet: {exc}") from None
        names = self._file.schema_arrow.names
        for column, option in ((text, "--text-column"), (id_column, "--id-column")):
            if column is not None and column not in names:
                listed = ", ".join(map(repr, names[:30]))
                raise SourceError(
                    f"{path} has no column {column!r} ({option}); its columns: {listed}"
                )
        self.progress_total: int | None = self._file.metadata.num_rows

    def job(self) -> dict[str, Any]:
        return file_job(self.path, "parquet", self.text, self.id_column)

    async def rows(self, position: Any, number: int) -> AsyncGenerator[Row, None]:
        for row in self._rows(int(position or 0)):
            yield row

    def _rows(self, start: int) -> Iterator[Row]:
        metadata = self._file.metadata
        first_group, group_start = 0, 0
        while first_group < metadata.num_row_groups:
            rows_in_group = metadata.row_group(first_group).num_rows
            if group_start + rows_in_group > start:
                break
            group_start += rows_in_group
            first_group += 1
        groups = list(range(first_group, metadata.num_row_groups))
        if not groups:
            return
        columns = [self.text] if self.id_column is None else [self.text, self.id_column]
        number = group_start
        try:
            batches = self._file.iter_batches(
                batch_size=_PARQUET_BATCH_ROWS,
                row_groups=groups,
                columns=list(dict.fromkeys(columns)),
            )
            for batch in batches:
                texts = batch.column(self.text).to_pylist()
                ids = [None] * len(texts)
                if self.id_column is not None:
                    ids = batch.column(self.id_column).to_pylist()
                for value, row_id in zip(texts, ids, strict=True):
                    if number >= start:
                        yield self._row(number, value, row_id)
                    number += 1
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise SourceError(f"cannot read {self.path}: {exc}") from None

    def _row(self, number: int, value: Any, row_id: Any) -> Row:
        where = f"row {number}"
        error = check_input(value, where, f"column {self.text!r}")
        if error is None and self.id_column is not None and row_id is None:
            error = RowError(
                ErrorCode.INVALID_REQUEST, f"{where}: id column {self.id_column!r} is null"
            )
        if self.id_column is None or row_id is None:
            row_id = number
        return Row(number, row_id, None if error else value, number + 1, number + 1, error)
