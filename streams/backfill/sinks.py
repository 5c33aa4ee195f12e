"""Backfill outputs, written in input order and made durable at checkpoints.

- `JsonlSink`: one line per row, ``{"id": .., "output": ..}`` (or, as the errors file,
  ``{"id": .., "error": {"code": .., "message": ..}}``). Its checkpoint position is its byte size,
  after flush and fsync; a resume truncates the file to it.
- `ParquetSink`: columns ``id`` and ``output``. Parquet cannot be appended to or cut, so rows are
  buffered and each checkpoint that has enough of them (or waited long enough) writes them as one
  part file under ``OUT.parts/`` (OUT less its extension), fsync-ed; its position is the number
  of parts. When the input is done the parts are merged, row group by row group, into ``OUT``
  (written as ``OUT.tmp`` and renamed), and the parts folder is removed. A resume deletes the
  parts past the position.
  Embedding rows are ``list<float32>``; other outputs (a classifier's dicts) are stored as
  pyarrow infers them from the first part, and later parts are cast to that schema.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import orjson

from streams.backfill.state import beside, fsync_dir
from streams.errors import KinferError

#: A Parquet part is written once this many rows are buffered, or ...
PART_ROWS: Final = 20_000
#: ... at a checkpoint at least this long after the previous part.
PART_INTERVAL_S: Final = 30.0

_JSON_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


class SinkError(KinferError):
    """An output that cannot be written (a full disk, outputs of mixed types for Parquet)."""


class OutputSink(Protocol):
    """Where the rows' outputs go, in input order."""

    path: Path

    def write(self, row_id: Any, output: Any) -> None: ...

    def checkpoint(self, force: bool) -> Any | None:
        """Make everything written durable; its position, or None if it chose to wait."""
        ...

    def restore(self, position: Any | None) -> None:
        """Cut off whatever was written after ``position`` (None: start afresh)."""
        ...

    def finish(self) -> None:
        """The input is done: complete the output (after a forced checkpoint)."""
        ...

    def cleanup(self) -> None:
        """Remove what only a resume would need (after the state says complete)."""
        ...

    def close(self) -> None: ...


def output_format(path: Path) -> str:
    """ "jsonl" or "parquet", from ``path``'s extension; SinkError for any other."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise SinkError(f"--output {path}: name a .jsonl (or .ndjson) or a .parquet file")


def open_sink(path: Path) -> OutputSink:
    return JsonlSink(path) if output_format(path) == "jsonl" else ParquetSink(path)


class JsonlSink:
    """JSON Lines, appended to; the checkpoint position is the file's durable byte size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def restore(self, position: Any | None) -> None:
        try:
            self._file = self.path.open("r+b" if position is not None else "wb")
            if position is not None:
                self._file.truncate(int(position))
                self._file.seek(int(position))
        except FileNotFoundError:
            raise SinkError(
                f"{self.path} is gone, but its state says it holds {position} bytes: "
                "start over with --overwrite"
            ) from None
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def write(self, row_id: Any, output: Any) -> None:
        self.write_line({"id": row_id, "output": output})

    def write_error(self, row_id: Any, code: str, message: str) -> None:
        self.write_line({"id": row_id, "error": {"code": code, "message": message}})

    def write_line(self, record: dict[str, Any]) -> None:
        try:
            self._file.write(orjson.dumps(record, option=_JSON_OPTIONS))
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        except TypeError as exc:  # a value orjson cannot write (an id of an odd type)
            raise SinkError(f"cannot write row id {record.get('id')!r} as JSON: {exc}") from None

    def checkpoint(self, force: bool) -> Any | None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        return self._file.tell()

    def finish(self) -> None:
        return None

    def cleanup(self) -> None:
        return None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ParquetSink:
    """Parquet with columns ``id`` and ``output``, written as parts then merged (see above)."""

    def __init__(
        self, path: Path, *, part_rows: int = PART_ROWS, part_interval_s: float = PART_INTERVAL_S
    ) -> None:
        self.path = path
        self.parts = beside(path, ".parts")
        self.part_rows, self.part_interval_s = part_rows, part_interval_s
        self._ids: list[Any] = []
        self._outputs: list[Any] = []
        self._count = 0
        self._last_part = time.monotonic()
        self._schema: Any = None

    def restore(self, position: Any | None) -> None:
        count = int(position or 0)
        if position is None and self.parts.exists():
            shutil.rmtree(self.parts)
        self.parts.mkdir(exist_ok=True)
        for stale in self.parts.iterdir():  # parts past the checkpoint, half-written ones
            if not stale.name.endswith(".parquet") or _part_index(stale) >= count:
                stale.unlink()
        found = sorted(self.parts.glob("part-*.parquet"))
        if len(found) != count:
            raise SinkError(
                f"{self.parts} holds {len(found)} parts, its state says {count}: "
                "start over with --overwrite"
            )
        self.path.unlink(missing_ok=True)  # a merge cut short: it is made again from the parts
        self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)
        self._count = count
        if found:
            import pyarrow.parquet as pq

            self._schema = pq.read_schema(found[0])

    def write(self, row_id: Any, output: Any) -> None:
        self._ids.append(row_id)
        self._outputs.append(output)

    def checkpoint(self, force: bool) -> Any | None:
        if not self._ids:
            return self._count
        waited = time.monotonic() - self._last_part >= self.part_interval_s
        if not (force or waited or len(self._ids) >= self.part_rows):
            return None
        self._write_part()
        return self._count

    def _write_part(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"id": _id_array(self._ids), "output": _output_array(self._outputs)})
        if self._schema is None:
            self._schema = table.schema
        elif table.schema != self._schema:
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                raise SinkError(
                    f"the rows of part {self._count} do not fit the Parquet schema of the "
                    f"first part ({self._schema}): {exc}; write JSONL instead"
                ) from None
        final = self.parts / f"part-{self._count:06d}.parquet"
        tmp = final.with_suffix(".tmp")
        try:
            pq.write_table(table, tmp)
            with tmp.open("rb") as file:
                os.fsync(file.fileno())
            os.replace(tmp, final)
            fsync_dir(self.parts)
        except OSError as exc:
            raise SinkError(f"cannot write {final}: {exc.strerror or exc}") from None
        self._count += 1
        self._ids, self._outputs = [], []
        self._last_part = time.monotonic()

    def finish(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tmp = self.path.with_name(self.path.name + ".tmp")
        parts = sorted(self.parts.glob("part-*.parquet"))
        schema = self._schema or pa.schema([("id", pa.int64()), ("output", pa.null())])
        try:
            with pq.ParquetWriter(tmp, schema) as writer:
                for part in parts:
                    file = pq.ParquetFile(part)
                    for group in range(file.num_row_groups):
                        writer.write_table(file.read_row_group(group))
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def cleanup(self) -> None:
        shutil.rmtree(self.parts, ignore_errors=True)

    def close(self) -> None:
        return None


def _part_index(path: Path) -> int:
    try:
        return int(path.stem.removeprefix("part-"))
    except ValueError:
        return 1 << 62


def _id_array(ids: list[Any]) -> Any:
    import pyarrow as pa

    try:
        return pa.array(ids)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed kinds (ints and strings): as text
        return pa.array([None if i is None else str(i) for i in ids], pa.string())


def _output_array(outputs: list[Any]) -> Any:
    """Embedding rows as ``list<float32>``; anything else as pyarrow infers it."""
    import pyarrow as pa

    if all(isinstance(o, np.ndarray) and o.ndim == 1 for o in outputs) or all(
        isinstance(o, list) and all(isinstance(x, float | int) for x in o) for o in outputs
    ):
        lengths = np.fromiter((len(o) for o in outputs), np.int32, len(outputs))
        offsets = np.zeros(len(outputs) + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = (
            np.concatenate([np.asarray(o, np.float32) for o in outputs])
            if outputs
            else np.zeros(0, np.float32)
        )
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32()))
    try:
        return pa.array(outputs)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SinkError(
            f"these outputs do not fit one Parquet column: {exc}; write JSONL"
        ) from None
