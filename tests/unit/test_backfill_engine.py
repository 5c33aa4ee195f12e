"""The backfill engine without Kafka: input order with error rows between, crash and resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from streams.backfill.run import Backfill, Options
from streams.backfill.sinks import JsonlSink, open_sink
from streams.backfill.sources import JsonlSource
from streams.backfill.state import BackfillState, beside, load_state, save_state
from streams.sdk.errors import ReplyTimeout
from tests.support.fake_worker import FakeWorker


def make_input(path: Path, n: int) -> list[str]:
    """n rows; every 13th has an empty text and every 29th a bad input (an error answer)."""
    texts = []
    with path.open("w", encoding="utf-8") as file:
        for i in range(n):
            text = "" if i % 13 == 5 else f"bad {i}" if i % 29 == 7 else f"row {i} text"
            texts.append(text)
            file.write(json.dumps({"text": text, "key": f"k{i}"}) + "\n")
    return texts


async def backfill_once(
    input_path: Path, output: Path, worker: FakeWorker, *, fresh: bool, batch_size: int = 8
) -> None:
    """One run of the engine as `kinfer backfill` runs it: fresh, or resumed from the state."""
    source = JsonlSource(input_path, "text", "key")
    state_file = beside(output, ".state.json")
    sink, errors = open_sink(output), JsonlSink(beside(output, ".errors.jsonl"))
    state = None if fresh else load_state(state_file)
    if state is None:
        state = BackfillState(job={})
        sink.restore(None)
        errors.restore(None)
        save_state(state_file, state)
    else:
        sink.restore(state.output_position)
        errors.restore(state.errors_position)
    options = Options(
        model="minilm", batch_size=batch_size, max_in_flight=3, checkpoint_interval_s=0.05
    )
    try:
        await Backfill(source, sink, errors, state, state_file, options).run(worker)  # type: ignore[arg-type]
    finally:
        sink.close()
        errors.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_outputs_and_errors_are_in_input_order(tmp_path: Path) -> None:
    texts = make_input(tmp_path / "in.jsonl", 300)
    output = tmp_path / "out.jsonl"
    await backfill_once(tmp_path / "in.jsonl", output, FakeWorker(seed=1), fresh=True)
    good = [i for i, t in enumerate(texts) if t and not t.startswith("bad")]
    rows = read_jsonl(output)
    assert [r["id"] for r in rows] == [f"k{i}" for i in good]
    assert [r["output"][0] for r in rows] == [float(len(texts[i])) for i in good]
    errors = read_jsonl(tmp_path / "out.errors.jsonl")
    assert [e["id"] for e in errors] == [f"k{i}" for i, t in enumerate(texts) if i not in good]
    codes = {e["error"]["code"] for e in errors}
    assert codes == {"INVALID_REQUEST"}
    assert errors[0]["error"]["message"] == "row 5 (line 6): $.text is an empty text"
    state = load_state(tmp_path / "out.state.json")
    assert state is not None
    assert state.complete
    assert (state.rows_done, state.outputs, state.errors) == (300, len(good), 300 - len(good))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
async def test_a_crashed_run_resumed_writes_each_row_once(tmp_path: Path, suffix: str) -> None:
    make_input(tmp_path / "in.jsonl", 400)
    expected = tmp_path / f"expected{suffix}"
    await backfill_once(tmp_path / "in.jsonl", expected, FakeWorker(seed=2), fresh=True)
    output = tmp_path / f"out{suffix}"
    for fail_after in (30, 60):  # two runs that lose their worker part way
        with pytest.raises(ReplyTimeout):
            await backfill_once(
                tmp_path / "in.jsonl",
                output,
                FakeWorker(seed=3, fail_after=fail_after),
                fresh=fail_after == 30,
            )
        state = load_state(beside(output, ".state.json"))
        assert state is not None
        assert 0 < state.rows_done < 400
        assert not state.complete
    await backfill_once(tmp_path / "in.jsonl", output, FakeWorker(seed=4), fresh=False)
    if suffix == ".jsonl":
        assert read_jsonl(output) == read_jsonl(expected)
    else:
        assert pq.read_table(output).to_pylist() == pq.read_table(expected).to_pylist()
        assert not beside(output, ".parts").exists()
    assert read_jsonl(beside(output, ".errors.jsonl")) == read_jsonl(
        beside(expected, ".errors.jsonl")
    )


async def test_rows_written_after_the_last_checkpoint_are_cut_on_resume(tmp_path: Path) -> None:
    make_input(tmp_path / "in.jsonl", 120)
    expected, output = tmp_path / "expected.jsonl", tmp_path / "out.jsonl"
    await backfill_once(tmp_path / "in.jsonl", expected, FakeWorker(seed=5), fresh=True)
    with pytest.raises(ReplyTimeout):
        await backfill_once(
            tmp_path / "in.jsonl", output, FakeWorker(seed=6, fail_after=20), fresh=True
        )
    with output.open("ab") as file:  # as a kill -9 leaves it: rows past the checkpoint
        file.write(b'{"id":"written","output":[1]}\n{"id":"half')
    await backfill_once(tmp_path / "in.jsonl", output, FakeWorker(seed=7), fresh=False)
    assert read_jsonl(output) == read_jsonl(expected)
