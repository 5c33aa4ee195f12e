"""``kinfer backfill`` against a real worker: a 10 000-row file killed with kill -9 and resumed,
CSV to Parquet and the refusals, and topic ranges (timestamps, offsets, kinfer requests).

Outputs are compared row by row with the model run directly in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from aiokafka import AIOKafkaProducer

from streams.admin import ensure_topics
from streams.backfill.state import load_state
from streams.broker import EmbeddedBroker, ExternalBroker
from tests.support.topics import create_worker_topics
from tests.support.worker import TEST_SETTINGS, WorkerProcess

pytestmark = [pytest.mark.broker, pytest.mark.timeout(420)]

Broker = EmbeddedBroker | ExternalBroker
Model = Callable[[list[str]], dict[str, np.ndarray]]

SUBJECTS = ["parcel", "invoice", "refund", "driver", "courier", "order", "basket", "voucher"]
STATES = ["arrived late", "was lost", "came early", "is fine", "was damaged"]


def short_text(i: int) -> str:
    """400 distinct short texts (about 8 tokens)."""
    return f"{SUBJECTS[i % 8]} {i % 400 // 8} {STATES[i % 5]}"


@pytest.fixture(scope="module")
def topics(broker: Broker) -> dict[str, str]:
    return asyncio.run(create_worker_topics(broker.bootstrap, "bf"))


@pytest.fixture(scope="module")
def worker(broker: Broker, topics: dict[str, str]) -> Iterator[WorkerProcess]:
    # batches of up to 128 short texts (the test default is 32): fewer model calls per row
    with WorkerProcess(broker.bootstrap, {**topics, "KINFER_MAX_BATCH": "128"}) as process:
        yield process


@pytest.fixture(scope="module")
def direct_model() -> Model:
    """text -> embedding, by the model in this process (the worker's buckets)."""
    from models import registry
    from models.runner import RunnerConfig

    runner = registry.load(
        "minilm",
        config=RunnerConfig(
            batch_buckets=tuple(int(b) for b in TEST_SETTINGS["KINFER_BATCH_BUCKETS"].split(",")),
            seq_buckets=tuple(int(s) for s in TEST_SETTINGS["KINFER_SEQ_BUCKETS"].split(",")),
        ),
    )

    def embed(texts: list[str]) -> dict[str, np.ndarray]:
        unique = sorted(set(texts))
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(unique), 32):
            chunk = unique[start : start + 32]
            found.update(zip(chunk, runner.infer(chunk)[0], strict=True))
        return found

    return embed


class Backfill:
    """``kinfer backfill`` in a subprocess of its own (so that it can be kill -9'd)."""

    def __init__(self, broker: Broker, topics: dict[str, str], tmp_path: Path) -> None:
        self.base = [
            "--broker",
            f"kafka://{broker.bootstrap}",
            "--request-topic",
            topics["request_topic"],
            "--reply-topic",
            topics["response_topic"],
        ]
        self.tmp_path = tmp_path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "streams.cli", "backfill", *args, *self.base]

    def run(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout_s, check=False
        )

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        with (self.tmp_path / "backfill.log").open("ab") as log:  # the child keeps its own copy
            return subprocess.Popen(
                self.command(*args), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )


def kill9_after(process: subprocess.Popen[bytes], state_file: Path, rows: int) -> int:
    """kill -9 ``process`` (ours) once its checkpoint says ``rows`` rows are done; those rows."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, "the backfill ended before it could be killed"
        state = load_state(state_file) if state_file.exists() else None
        if state is not None and state.rows_done >= rows:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            return state.rows_done
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"no checkpoint of {rows} rows in time")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_a_10000_row_backfill_killed_and_resumed_matches_the_model(
    broker: Broker,
    topics: dict[str, str],
    worker: WorkerProcess,
    direct_model: Model,
    tmp_path: Path,
) -> None:
    source, output = tmp_path / "orders.jsonl", tmp_path / "scores.jsonl"
    texts = {}
    with source.open("w", encoding="utf-8") as file:
        for i in range(10_000):
            if i == 1234:
                file.write(json.dumps({"id": f"o{i}", "text": "  "}) + "\n")
            elif i == 8765:
                file.write(json.dumps({"id": f"o{i}", "body": "no text"}) + "\n")
            else:
                texts[f"o{i}"] = short_text(i)
                file.write(json.dumps({"id": f"o{i}", "text": texts[f"o{i}"]}) + "\n")
    backfill = Backfill(broker, topics, tmp_path)
    args = ("orders.jsonl", "--model", "minilm", "--output", "scores.jsonl", "--id-column", "id")
    args = tuple(str(tmp_path / a) if a.endswith(".jsonl") else a for a in args)
    first = backfill.start(*args, "--no-progress")
    done_before_kill = kill9_after(first, tmp_path / "scores.state.json", 2000)
    state = load_state(tmp_path / "scores.state.json")
    assert state is not None
    assert not state.complete
    assert 2000 <= done_before_kill < 10_000

    resumed = backfill.run(*args, "--progress")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {output} at row {done_before_kill:,}" in resumed.stderr
    assert "rows/s" in resumed.stderr  # the progress bar: rows, errors, rate
    assert "backfill done: 10,000 rows" in resumed.stdout
    assert "9,998 outputs" in resumed.stdout
    assert f"resumed at row {done_before_kill:,}" in resumed.stdout

    rows = read_jsonl(output)
    assert [row["id"] for row in rows] == list(texts)  # every row once, in input order
    expected = direct_model(list(texts.values()))
    for row in rows:
        np.testing.assert_allclose(row["output"], expected[texts[row["id"]]], atol=2e-5)
    errors = read_jsonl(tmp_path / "scores.errors.jsonl")
    assert errors == [
        {
            "id": "o1234",
            "error": {
                "code": "INVALID_REQUEST",
                "message": "row 1234 (line 1235): $.text is an empty text",
            },
        },
        {
            "id": "o8765",
            "error": {
                "code": "INVALID_REQUEST",
                "message": "row 8765 (line 8766): $.text matches nothing: $ has no key 'text'",
            },
        },
    ]
    again = backfill.run(*args)
    assert again.returncode == 0
    assert "is already complete: 10,000 rows" in again.stdout


def test_csv_to_parquet_and_clear_refusals(
    broker: Broker,
    topics: dict[str, str],
    worker: WorkerProcess,
    direct_model: Model,
    tmp_path: Path,
) -> None:
    source = tmp_path / "reviews.csv"
    texts = [short_text(i * 3) + ", with a comma" for i in range(150)]
    source.write_text(
        "review_id,text\n" + "".join(f'r{i},"{t}"\n' for i, t in enumerate(texts)), "utf-8"
    )
    backfill = Backfill(broker, topics, tmp_path)
    out = str(tmp_path / "reviews.parquet")
    done = backfill.run(str(source), "--model", "minilm", "-o", out, "--id-column", "review_id")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(150)]
    expected = direct_model(texts)
    for text, vector in zip(texts, table.column("output").to_pylist(), strict=True):
        np.testing.assert_allclose(vector, expected[text], atol=2e-5)
    assert not (tmp_path / "reviews.parts").exists()

    refusals = {
        "another job on the same output": (
            [str(source), "--model", "minilm", "-o", out],
            "belongs to another backfill (id 'review_id' then, None now)",
        ),
        "a missing column": (
            [
                str(source),
                "--model",
                "minilm",
                "-o",
                str(tmp_path / "x.jsonl"),
                "--text-column",
                "body",
            ],
            "has no column 'body' (--text-column); its columns: 'review_id', 'text'",
        ),
        "a missing file": (
            [str(tmp_path / "nope.csv"), "--model", "minilm", "-o", str(tmp_path / "y.jsonl")],
            "nope.csv does not exist",
        ),
        "an unknown model": (
            [str(source), "--model", "no-such-model", "-o", str(tmp_path / "z.jsonl")],
            "is not served",
        ),
    }
    for what, (args, message) in refusals.items():
        refused = backfill.run(*args, timeout_s=120)
        assert refused.returncode == 1, what
        assert message in refused.stderr, (what, refused.stderr)
        assert "Traceback" not in refused.stderr, what


async def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, partition=p) for p, value in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def test_topic_ranges_by_time_and_offset_resumed_after_kill9(
    broker: Broker,
    topics: dict[str, str],
    worker: WorkerProcess,
    direct_model: Model,
    unique_name: Any,
    tmp_path: Path,
) -> None:
    orders = unique_name("orders")
    asyncio.run(ensure_topics(broker.bootstrap, {orders: 2}))

    def event(i: int) -> bytes:
        return orjson.dumps({"order_id": f"A{i}", "note": short_text(i), "total": i})

    before = [(i % 2, event(i)) for i in range(40)]
    asyncio.run(produce(broker.bootstrap, orders, before))
    time.sleep(1.0)
    cut = datetime.now(UTC)
    time.sleep(0.5)
    after = [(i % 2, event(i)) for i in range(40, 240)]
    after[11] = (after[11][0], b"not json")
    after[20] = (after[20][0], orjson.dumps({"order_id": "A60", "total": 3}))  # no note
    asyncio.run(produce(broker.bootstrap, orders, after))

    backfill = Backfill(broker, topics, tmp_path)
    out = tmp_path / "rescored.jsonl"
    args = ["--from-topic", orders, "--start", cut.isoformat(), "--end", "latest"]
    args += ["--text", "$.note", "--id", "$.order_id", "--model", "minilm", "-o", str(out)]
    slow = backfill.start(*args, "--batch-size", "1", "--max-in-flight", "1")
    kill9_after(slow, tmp_path / "rescored.state.json", 30)
    done = backfill.run(*args)
    assert done.returncode == 0, done.stderr
    assert "backfill done: 200 rows" in done.stdout

    # input order: partition 0 in offset order, then partition 1. after[k] went to partition
    # k % 2 at offset 20 + k // 2 (the 40 records before the cut hold offsets 0-19 of each)
    in_order = sorted(range(len(after)), key=lambda k: (k % 2, k))
    good = [orjson.loads(after[k][1]) for k in in_order if k not in (11, 20)]
    rows = read_jsonl(out)
    assert [row["id"] for row in rows] == [doc["order_id"] for doc in good]
    expected = direct_model([doc["note"] for doc in good])
    for row, doc in zip(rows, good, strict=True):
        np.testing.assert_allclose(row["output"], expected[doc["note"]], atol=2e-5)
    missing_note, not_json = read_jsonl(tmp_path / "rescored.errors.jsonl")
    assert missing_note == {
        "id": "A60",
        "error": {
            "code": "INVALID_REQUEST",
            "message": "partition 0 offset 30: $.note matches nothing: $ has no key 'note'",
        },
    }
    assert not_json["id"] == "1:25"
    assert not_json["error"]["code"] == "INVALID_JSON"
    assert not_json["error"]["message"].startswith("partition 1 offset 25 is not JSON")

    by_offset = backfill.run(
        "--from-topic",
        orders,
        "--start",
        "5",
        "--end",
        "15",
        "--partition",
        "1",
        "--text",
        "$.note",
        "--model",
        "minilm",
        "-o",
        str(tmp_path / "offsets.jsonl"),
    )
    assert by_offset.returncode == 0, by_offset.stderr
    assert [r["id"] for r in read_jsonl(tmp_path / "offsets.jsonl")] == [
        f"1:{o}" for o in range(5, 15)
    ]


def test_a_topic_of_kinfer_requests_is_rescored_input_by_input(
    broker: Broker,
    topics: dict[str, str],
    worker: WorkerProcess,
    direct_model: Model,
    unique_name: Any,
    tmp_path: Path,
) -> None:
    requests = unique_name("requests")
    asyncio.run(ensure_topics(broker.bootstrap, {requests: 1}))
    inputs = [[short_text(i), short_text(i + 1)] for i in range(0, 9, 3)] + [[]]
    records = [
        (0, orjson.dumps({"id": f"q{i}", "model": "minilm", "inputs": batch}))
        for i, batch in enumerate(inputs)
    ]
    asyncio.run(produce(broker.bootstrap, requests, records))
    out = tmp_path / "requests.parquet"
    done = Backfill(broker, topics, tmp_path).run(
        "--from-topic", requests, "--model", "minilm", "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [f"0:{o}:{i}" for o in range(3) for i in range(2)]
    flat = [text for batch in inputs for text in batch]
    expected = direct_model(flat)
    for text, vector in zip(flat, table.column("output").to_pylist(), strict=True):
        np.testing.assert_allclose(vector, expected[text], atol=2e-5)
    [error] = read_jsonl(tmp_path / "requests.errors.jsonl")
    assert error["id"] == "0:3"
    assert (
        error["error"]["message"]
        == "partition 0 offset 3: $.inputs[*] matches nothing: $.inputs is an empty list"
    )
