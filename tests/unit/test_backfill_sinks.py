"""Backfill writers and the state: truncation on resume, Parquet parts and merge, atomic state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from streams.backfill.sinks import JsonlSink, ParquetSink, SinkError, open_sink, output_format
from streams.backfill.state import (
    BackfillState,
    StateError,
    beside,
    load_state,
    save_state,
    state_path,
)


def vector(i: int) -> np.ndarray:
    return np.linspace(-1, 1, 4, dtype=np.float32) * np.float32(0.1 * (i + 1))


def test_jsonl_resume_cuts_what_came_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path)
    sink.restore(None)
    sink.write(0, vector(0))
    sink.write("b", [1.5, 2.0])
    position = sink.checkpoint(False)
    sink.write(2, vector(2))  # written, never checkpointed: a kill -9 here
    sink.close()
    assert len(path.read_bytes().splitlines()) == 3
    again = JsonlSink(path)
    again.restore(position)
    again.write(2, vector(2))
    again.checkpoint(True)
    again.close()
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["id"] for r in rows] == [0, "b", 2]
    # the shortest text of each float32: read back as float32 it is the same value
    np.testing.assert_array_equal(np.array(rows[0]["output"], np.float32), vector(0))
    assert rows[1]["output"] == [1.5, 2.0]


def test_jsonl_error_rows_and_a_vanished_file(tmp_path: Path) -> None:
    path = tmp_path / "out.errors.jsonl"
    sink = JsonlSink(path)
    sink.restore(None)
    sink.write_error(7, "INVALID_REQUEST", "row 7: empty")
    position = sink.checkpoint(True)
    sink.close()
    assert orjson.loads(path.read_bytes()) == {
        "id": 7,
        "error": {"code": "INVALID_REQUEST", "message": "row 7: empty"},
    }
    path.unlink()
    with pytest.raises(SinkError, match="is gone, but its state says it holds"):
        JsonlSink(path).restore(position)


def test_parquet_parts_survive_a_crash_and_merge_in_order(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = ParquetSink(path, part_rows=3, part_interval_s=3600)
    sink.restore(None)
    positions = []
    for i in range(8):
        sink.write(i, vector(i))
        positions.append(sink.checkpoint(False))
    # a part is written each time 3 rows are buffered; in between the sink waits (None)
    assert positions == [None, None, 1, None, None, 2, None, None]
    # the crash: rows 6 and 7 were buffered only; a stray half-written part is left behind
    (sink.parts / "part-000002.tmp").write_bytes(b"half")
    resumed = ParquetSink(path, part_rows=3, part_interval_s=3600)
    resumed.restore(2)
    assert sorted(p.name for p in resumed.parts.iterdir()) == [
        "part-000000.parquet",
        "part-000001.parquet",
    ]
    for i in range(6, 10):
        resumed.write(i, vector(i))
    assert resumed.checkpoint(True) == 3  # the 4 rows buffered: one more part
    resumed.finish()
    resumed.cleanup()
    table = pq.read_table(path)
    assert table.column_names == ["id", "output"]
    assert table.column("id").to_pylist() == list(range(10))
    outputs = np.array(table.column("output").to_pylist(), np.float32)
    np.testing.assert_array_equal(outputs, np.stack([vector(i) for i in range(10)]))
    assert str(table.schema.field("output").type) == "list<element: float>"
    assert not resumed.parts.exists()


def test_parquet_restore_refuses_missing_parts(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path / "out.parquet", part_rows=1)
    sink.restore(None)
    sink.write(0, vector(0))
    assert sink.checkpoint(False) == 1
    (sink.parts / "part-000000.parquet").unlink()
    with pytest.raises(SinkError, match="holds 0 parts, its state says 1"):
        ParquetSink(tmp_path / "out.parquet").restore(1)


def test_parquet_classifier_outputs_keep_their_structure(tmp_path: Path) -> None:
    path = tmp_path / "digits.parquet"
    sink = ParquetSink(path, part_rows=2)
    sink.restore(None)
    rows = [{"label": i, "probabilities": [0.1] * 10} for i in range(3)]
    for i, row in enumerate(rows):
        sink.write(i, row)
        sink.checkpoint(False)
    sink.checkpoint(True)
    sink.finish()
    assert pq.read_table(path).column("output").to_pylist() == rows


def test_output_format_by_extension(tmp_path: Path) -> None:
    assert output_format(Path("a.ndjson")) == "jsonl"
    assert output_format(Path("a.PARQUET")) == "parquet"
    assert isinstance(open_sink(tmp_path / "x.pq"), ParquetSink)
    with pytest.raises(SinkError, match=r"name a \.jsonl"):
        output_format(Path("a.csv"))


def test_state_round_trip_is_atomic_and_versioned(tmp_path: Path) -> None:
    path = state_path(tmp_path / "scores.jsonl")
    assert path.name == "scores.state.json"
    assert beside(tmp_path / "scores.parquet", ".parts").name == "scores.parts"
    assert load_state(path) is None
    state = BackfillState(job={"model": "minilm"}, rows_done=5, source_position=[10, 2])
    save_state(path, state)
    assert not path.with_name(path.name + ".tmp").exists()
    assert load_state(path) == state
    path.write_bytes(orjson.dumps({"format": 99, "job": {}}))
    with pytest.raises(StateError, match="not a backfill state of this kinfer version"):
        load_state(path)
    path.write_bytes(b"{broken")
    with pytest.raises(StateError, match="cannot read the backfill state"):
        load_state(path)
