"""`kinfer backfill` rows/s on short texts, beside the raw model limit on the same texts.

    .venv/bin/python -m tests.benchmarks.backfill_rate [--rows 10000] [--json out.json]

Starts an embedded broker and one worker with the served defaults (the README's settings, as
`make run`) and, ``--rounds`` times, one after the other (neither competes with the other):

- the raw limit: the texts through ``ModelRunner.infer`` in this process, with the worker's
  runner configuration, ``--raw-batch`` texts per call (warmed up before the first round);
- the backfill: a JSONL file of the same ``--rows`` short texts (common.TEXT, about 19 tokens)
  through `kinfer backfill` in a subprocess (its own rows/s, from its state).

Interleaving the rounds lets both figures see the same machine; the medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streams.backfill.state import load_state
from streams.broker import EmbeddedBroker
from tests.benchmarks.common import SERVED, SETTINGS, TEXT
from tests.support.topics import create_worker_topics
from tests.support.worker import WorkerProcess


def backfill(
    bootstrap: str, topics: dict[str, str], folder: Path, rows: int, batch: int, flight: int
) -> dict[str, Any]:
    """Backfill ``rows`` texts; rows/s as the backfill reports it, and the process wall time."""
    source = folder / "texts.jsonl"
    source.write_text(
        "".join(json.dumps({"text": TEXT.format(n=i)}) + "\n" for i in range(rows)), "utf-8"
    )
    output = folder / "texts.out.jsonl"
    command = [
        sys.executable, "-m", "streams.cli", "backfill", str(source), "--model", "minilm",
        "--output", str(output), "--batch-size", str(batch), "--max-in-flight", str(flight),
        "--broker", f"kafka://{bootstrap}", "--request-topic", topics["request_topic"],
        "--reply-topic", topics["response_topic"], "--no-progress", "--overwrite",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"backfill failed: {done.stderr[-2000:]}")
    state = load_state(folder / "texts.out.state.json")
    if state is None or not state.complete or state.outputs != rows:
        raise RuntimeError(f"backfill incomplete: {done.stdout[-2000:]}")
    return {
        "rows": rows,
        "elapsed_s": state.elapsed_s,
        "rows_per_s": rows / state.elapsed_s,
        "process_wall_s": wall,
        "summary": done.stdout.strip().splitlines()[0],
    }


@contextlib.contextmanager
def raw_runner() -> Iterator[Any]:
    """The model in this process, with the worker's runner configuration, warmed up."""
    from models.registry import load
    from models.runner import RunnerConfig

    config = RunnerConfig(
        batch_buckets=SETTINGS.batch_buckets,
        seq_buckets=SETTINGS.seq_buckets,
        pack_length=SETTINGS.pack_length,
        call_cost_rows=SETTINGS.call_cost_rows,
    )
    with load("minilm", config=config) as runner:
        runner.warm_up()
        yield runner


def raw_limit(runner: Any, rows: int, per_call: int) -> dict[str, Any]:
    """Texts/s of ``runner.infer`` on the texts, ``per_call`` at a time."""
    texts = [TEXT.format(n=i) for i in range(rows)]
    chunks = [texts[i : i + per_call] for i in range(0, rows, per_call)]
    for chunk in chunks[:2]:  # the same shapes once, outside the timing
        runner.infer(chunk)
    started = time.perf_counter()
    for chunk in chunks:
        runner.infer(chunk)
    elapsed = time.perf_counter() - started
    return {"rows": rows, "per_call": per_call, "elapsed_s": elapsed, "rows_per_s": rows / elapsed}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2, help="raw + backfill, interleaved")
    parser.add_argument("--batch-size", type=int, default=64, help="backfill inputs per message")
    parser.add_argument("--max-in-flight", type=int, default=8, help="backfill messages in flight")
    parser.add_argument("--raw-batch", type=int, default=SETTINGS.max_batch, help="texts per call")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    raws: list[dict[str, Any]] = []
    fills: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="kinfer-backfill-bench-") as tmp,
        EmbeddedBroker(silent=True) as broker,
    ):
        folder = Path(tmp)
        topics = asyncio.run(create_worker_topics(broker.bootstrap, "bench-backfill"))
        settings = {**SERVED, **topics, "KINFER_MODELS": "minilm:0.1.0"}
        with (
            WorkerProcess(broker.bootstrap, settings, log_path=folder / "worker.log"),
            raw_runner() as runner,
        ):
            for round_ in range(args.rounds):
                raws.append(raw_limit(runner, args.rows, args.raw_batch))
                fills.append(
                    backfill(
                        broker.bootstrap, topics, folder, args.rows, args.batch_size,
                        args.max_in_flight,
                    )
                )  # fmt: skip
                print(
                    f"round {round_ + 1}: raw {raws[-1]['rows_per_s']:,.0f} texts/s, "
                    f"backfill {fills[-1]['rows_per_s']:,.0f} rows/s",
                    file=sys.stderr,
                )
    raw = statistics.median(r["rows_per_s"] for r in raws)
    filled = statistics.median(f["rows_per_s"] for f in fills)
    print(f"{args.rows:,} short texts ({TEXT!r}), minilm 0.1.0, served defaults, "
          f"median of {args.rounds} interleaved rounds:")  # fmt: skip
    print(f"  raw model limit (ModelRunner.infer, {args.raw_batch} per call): {raw:,.0f} texts/s")
    print(f"  kinfer backfill ({args.batch_size} per message, {args.max_in_flight} in flight): "
          f"{filled:,.0f} rows/s ({filled / raw:.0%} of the limit)")  # fmt: skip
    result = {"raw": raws, "backfill": fills, "raw_median": raw, "backfill_median": filled}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
