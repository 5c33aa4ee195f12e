"""Section 5, the host ceiling: what one worker process costs per message and per input when the
model costs nothing (``KINFER_BENCH_ZERO_COST``), driven by a flood load generator.

For 1 and 64 inputs per message, float and base64 answers, with tokenisation (zero-cost "model":
the real tokenizer and packing run, the model returns constant rows) and without it
("model-and-tokenizer": every text becomes a fixed short token sequence). CPU figures come from
the worker's own /proc/PID/stat (utime + stime) over the measured window, which a busy machine
does not distort; rates (messages/s, inputs/s) are what the flood got through on a machine that
the worker shares with the broker and the driver.

The flood driver encodes every request before the window, produces them in record batches per
partition (aiokafka ``create_batch``/``send_batch``, no per-message send) and reads answers
without parsing their rows (the id from the record's head, ``timing`` from its tail); its own
CPU is reported next to the worker's, so a saturated driver shows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from streams.broker import EmbeddedBroker
from streams.client import start_reading
from tests.benchmarks.common import cpu_seconds, inputs_for, padding_of, request_value
from tests.benchmarks.pipeline import Workers, topics_for, workers
from tests.benchmarks.table import Table, fmt, met, pad_text

#: KINFER_BENCH_ZERO_COST values measured, with and without tokenisation.
MODES = ("model", "model-and-tokenizer")
ENCODINGS = ("float", "base64")
SHAPES = (1, 64)
#: Targets (model-and-tokenizer, base64): worker CPU per message at 1 input/message, per input at
#: 64 inputs/message; tokenisation + packing per text.
TARGET_MS_PER_MESSAGE = 0.2
TARGET_US_PER_INPUT = 3.0
TARGET_TOKENISE_US = 10.0
#: Texts per call for the in-process tokenisation figure.
TOKENISE_BATCH = 64


class FloodReader:
    """Answers of one response topic, read without parsing their rows; keeps ids and timing."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
            max_partition_fetch_bytes=32 * 1024 * 1024,
            fetch_max_bytes=128 * 1024 * 1024,
        )
        self.ids: set[Hashable] = set()
        self.errors: dict[str, int] = {}
        self.versions: dict[str, int] = {}  # the answers' model versions (zero-cost@bench, ...)
        self.last_arrival = 0.0
        self.timing_sums: dict[str, float] = {}
        self.timing_counts: dict[str, int] = {}

    async def __aenter__(self) -> Self:
        await start_reading(self.consumer, [self.topic], timeout_s=20)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.consumer.stop()

    def _take(self, value: bytes, stamp: float) -> None:
        head = value[:512]
        if head.startswith(b'{"id":"') and b'"outputs":' in head:
            answer_id: Any = value[7 : value.index(b'"', 7)].decode()
            at = head.find(b'"version":"')
            version = head[at + 11 : head.index(b'"', at + 11)].decode() if at > 0 else "?"
            self.versions[version] = self.versions.get(version, 0) + 1
            tail = value.rfind(b',"timing":')
            if tail > 0:
                for name, number in orjson.loads(value[tail + 10 : -1]).items():
                    self.timing_sums[name] = self.timing_sums.get(name, 0.0) + float(number)
                    self.timing_counts[name] = self.timing_counts.get(name, 0) + 1
        else:  # an error, or an answer laid out otherwise: parse it whole
            doc = orjson.loads(value)
            answer_id = doc.get("id")
            if "error" in doc:
                code = str((doc["error"] or {}).get("code", "?"))
                self.errors[code] = self.errors.get(code, 0) + 1
        self.ids.add(answer_id)
        self.last_arrival = stamp

    async def collect(self, ids: set[Hashable], timeout_s: float) -> int:
        """Read until every id is answered or ``timeout_s`` passes; returns how many are missing."""
        deadline = time.monotonic() + timeout_s
        while not ids <= self.ids and time.monotonic() < deadline:
            batches = await self.consumer.getmany(timeout_ms=50, max_records=20000)
            stamp = time.time()
            for records in batches.values():
                record: ConsumerRecord[bytes, bytes]
                for record in records:
                    if record.value is not None:
                        self._take(record.value, stamp)
        return len(ids - self.ids)

    def mean_timing(self) -> dict[str, float]:
        return {k: self.timing_sums[k] / self.timing_counts[k] for k in self.timing_sums}


@dataclass
class FloodRun:
    """What one flood measured."""

    messages: int
    per_message: int
    encoding: str
    missing: int
    errors: dict[str, int]
    elapsed_s: float
    produce_s: float
    worker_cpu_s: float
    broker_cpu_s: float
    driver_cpu_s: float
    timing: dict[str, float] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def zero_cost(self) -> bool:
        """Every answer came from the zero-cost model (its version says so)."""
        return bool(self.versions) and all(v.startswith("zero-cost") for v in self.versions)

    @property
    def answered(self) -> int:
        return self.messages - self.missing

    @property
    def messages_per_s(self) -> float:
        return self.answered / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def inputs_per_s(self) -> float:
        return self.messages_per_s * self.per_message

    @property
    def worker_ms_per_message(self) -> float:
        return 1000 * self.worker_cpu_s / self.answered if self.answered else float("nan")

    @property
    def worker_us_per_input(self) -> float:
        return 1000 * self.worker_ms_per_message / self.per_message

    def summary(self) -> dict[str, Any]:
        answered = max(1, self.answered)
        return {
            "messages": self.messages,
            "per_message": self.per_message,
            "encoding": self.encoding,
            "missing": self.missing,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "produce_s": round(self.produce_s, 3),
            "driver_produced_inputs_per_s": round(
                self.messages * self.per_message / max(self.produce_s, 1e-6)
            ),
            "messages_per_s": round(self.messages_per_s, 1),
            "inputs_per_s": round(self.inputs_per_s, 1),
            "worker_cpu_ms_per_message": round(self.worker_ms_per_message, 4),
            "worker_cpu_us_per_input": round(self.worker_us_per_input, 3),
            "worker_cores": round(self.worker_cpu_s / self.elapsed_s, 2) if self.elapsed_s else 0,
            "broker_cpu_ms_per_message": round(1000 * self.broker_cpu_s / answered, 4),
            "driver_cpu_ms_per_message": round(1000 * self.driver_cpu_s / answered, 4),
            "driver_cores": round(self.driver_cpu_s / self.elapsed_s, 2) if self.elapsed_s else 0,
            "timing_mean": {k: round(v, 4) for k, v in self.timing.items()},
            "versions": self.versions,
        }


async def flood(
    bootstrap: str,
    request_topic: str,
    response_topic: str,
    *,
    messages: int,
    per_message: int,
    encoding: str,
    pids: Sequence[int],
    broker_pid: int | None = None,
    timeout_s: float = 120.0,
) -> FloodRun:
    """Produce ``messages`` pre-encoded requests as fast as batches go; time to the last answer."""
    tag = uuid.uuid4().hex[:6]
    ids: set[Hashable] = {f"f{tag}-{i}" for i in range(messages)}
    values = [
        request_value(f"f{tag}-{i}", inputs_for(i, per_message), encoding) for i in range(messages)
    ]
    prod = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        max_request_size=16 * 1024 * 1024,
    )
    await prod.start()
    try:
        partitions = sorted(await prod.partitions_for(request_topic))
        async with FloodReader(bootstrap, response_topic) as reader:
            me = [os.getpid()]
            broker = [broker_pid] if broker_pid else []
            cpu0, bcpu0, dcpu0 = cpu_seconds(pids), cpu_seconds(broker), cpu_seconds(me)
            started = time.time()
            collecting = asyncio.ensure_future(reader.collect(ids, timeout_s))
            futures = []
            # round-robin over partitions, one record batch at a time for each
            batches = {p: prod.create_batch() for p in partitions}
            for i, value in enumerate(values):
                partition = partitions[i % len(partitions)]
                if batches[partition].append(key=None, value=value, timestamp=None) is None:
                    futures.append(
                        await prod.send_batch(
                            batches[partition], request_topic, partition=partition
                        )
                    )
                    await asyncio.sleep(0)  # let the reader drain answers meanwhile
                    batches[partition] = prod.create_batch()
                    batches[partition].append(key=None, value=value, timestamp=None)
            for partition, batch in batches.items():
                if batch.record_count():
                    futures.append(await prod.send_batch(batch, request_topic, partition=partition))
            await asyncio.gather(*futures)
            produce_s = time.time() - started
            missing = await collecting
            cpu1, bcpu1, dcpu1 = cpu_seconds(pids), cpu_seconds(broker), cpu_seconds(me)
            ended = reader.last_arrival or time.time()
    finally:
        await prod.stop()
    return FloodRun(
        messages=messages,
        per_message=per_message,
        encoding=encoding,
        missing=missing,
        errors=reader.errors,
        elapsed_s=ended - started,
        produce_s=produce_s,
        worker_cpu_s=cpu1 - cpu0,
        broker_cpu_s=bcpu1 - bcpu0,
        driver_cpu_s=dcpu1 - dcpu0,
        timing=reader.mean_timing(),
        versions=reader.versions,
    )


async def sized_flood(
    bootstrap: str,
    group: Workers,
    *,
    seconds: float,
    per_message: int,
    encoding: str,
    broker_pid: int | None,
) -> FloodRun:
    """A flood sized to take about ``seconds``, from probe floods (8x larger until 0.3 s)."""
    probe = 4 if per_message > 1 else 64
    while True:
        run = await flood(
            bootstrap,
            group.request_topic,
            group.response_topic,
            messages=probe,
            per_message=per_message,
            encoding=encoding,
            pids=group.pids,
        )
        if run.missing or run.elapsed_s >= 0.3 or probe >= 8192:
            break
        probe *= 8
    messages = max(8, int(seconds * run.messages_per_s))
    return await flood(
        bootstrap,
        group.request_topic,
        group.response_topic,
        messages=messages,
        per_message=per_message,
        encoding=encoding,
        pids=group.pids,
        broker_pid=broker_pid,
        timeout_s=max(60.0, 10 * seconds),
    )


def measure_tokenisation(runner: Any, seconds: float) -> dict[str, Any]:
    """In-process, on 64-text batches of the bench's texts: ``runner.tokenize`` alone, and
    ``runner.tokenize`` + ``runner.pack`` (the worker's host-side preparation of a batch).

    CPU µs per text from this process's CPU time (the tokenizer may use more than one thread;
    nothing else in this process is busy meanwhile), and wall µs per text.
    """
    batches = [inputs_for(k, TOKENISE_BATCH) for k in range(16)]

    def tokenise(texts: list[str]) -> None:
        runner.tokenize(texts)

    def tokenise_and_pack(texts: list[str]) -> None:
        runner.pack(runner.tokenize(texts))

    out: dict[str, Any] = {"batch": TOKENISE_BATCH}
    for name, step in (("tokenize", tokenise), ("tokenize_and_pack", tokenise_and_pack)):
        step(batches[0])
        calls = 0
        wall0, process0 = time.perf_counter(), time.process_time()
        while (wall := time.perf_counter() - wall0) < seconds or calls == 0:
            step(batches[calls % len(batches)])
            calls += 1
        texts = calls * TOKENISE_BATCH
        out[name] = {
            "texts": texts,
            "cpu_us_per_text": round(1e6 * (time.process_time() - process0) / texts, 2),
            "wall_us_per_text": round(1e6 * wall / texts, 2),
        }
    return out


def _target_notes(mode: str, run: FloodRun) -> str:
    if mode != "model-and-tokenizer" or run.encoding != "base64":
        return ""
    if run.per_message == 1:
        ok = run.worker_ms_per_message <= TARGET_MS_PER_MESSAGE
        return f"target <= {TARGET_MS_PER_MESSAGE} ms/msg: {met(ok)}"
    ok = run.worker_us_per_input <= TARGET_US_PER_INPUT
    return f"target <= {TARGET_US_PER_INPUT:g} µs/input: {met(ok)}"


async def measure_host(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    runner: Any,
    results: dict[str, Any],
    table: Table,
) -> None:
    """Section 5: the host rows, the derived tokenisation cost and the in-process one."""
    out: dict[str, Any] = {"seconds": args.host_seconds, "runs": []}
    runs: dict[tuple[str, int, str], FloodRun] = {}
    for mode in MODES:
        topics = await topics_for(broker.bootstrap, 4, f"host-{mode}")
        env = {"KINFER_BENCH_ZERO_COST": mode}
        with workers(
            broker.bootstrap, partitions=4, count=1, topics=topics, log_dir=args.log_dir, env=env
        ) as group:
            for per_message in SHAPES:
                for encoding in ENCODINGS:
                    run = await sized_flood(
                        broker.bootstrap,
                        group,
                        seconds=args.host_seconds,
                        per_message=per_message,
                        encoding=encoding,
                        broker_pid=broker.pid,
                    )
                    runs[mode, per_message, encoding] = run
                    out["runs"].append({"zero_cost": mode, **run.summary()})
                    _add_row(table, mode, run)
    derived: dict[str, float] = {}
    for per_message in SHAPES:
        for encoding in ENCODINGS:
            with_tok = runs["model", per_message, encoding].worker_us_per_input
            without = runs["model-and-tokenizer", per_message, encoding].worker_us_per_input
            derived[f"{per_message}/{encoding}"] = round(with_tok - without, 2)
    out["tokenise_and_pack_derived_us_per_text"] = derived
    for encoding in ENCODINGS:
        value = derived[f"64/{encoding}"]
        table.add(
            "5",
            f"tokenisation + packing, derived, 64 inputs/msg, {encoding}",
            value,
            "CPU-µs/text",
            note=f"worker CPU per input, zero-cost model minus model-and-tokenizer (1/msg: "
            f"{derived[f'1/{encoding}']:.1f}); target <= {TARGET_TOKENISE_US:g}: "
            f"{met(value <= TARGET_TOKENISE_US)}",
        )
    direct = await asyncio.to_thread(measure_tokenisation, runner, args.tok_seconds / 2)
    out["tokenise_direct"] = direct
    both, alone = direct["tokenize_and_pack"], direct["tokenize"]
    table.add(
        "5",
        f"tokenisation + packing, in-process, batch {TOKENISE_BATCH}",
        both["cpu_us_per_text"],
        "CPU-µs/text",
        note=f"runner.tokenize + runner.pack; tokenize alone {alone['cpu_us_per_text']:.1f}; "
        f"wall {both['wall_us_per_text']:.1f} µs/text; target <= {TARGET_TOKENISE_US:g}: "
        f"{met(both['cpu_us_per_text'] <= TARGET_TOKENISE_US)}",
    )
    results["host"] = out
    args.host_table = render_host(runs)


def _add_row(table: Table, mode: str, run: FloodRun) -> None:
    s = run.summary()
    what = f"host: zero-cost {mode}, {run.per_message} input(s)/msg, {run.encoding}"
    note = (
        f"{s['worker_cpu_ms_per_message']:.3f} ms/msg, {s['worker_cpu_us_per_input']:.1f} "
        f"µs/input; {s['messages_per_s']:,.0f} msg/s, {s['inputs_per_s']:,.0f} inputs/s; "
        f"driver {s['driver_cores']:.2f} cores (produced {s['driver_produced_inputs_per_s']:,} "
        f"inputs/s), broker {s['broker_cpu_ms_per_message']:.2f} ms/msg"
    )
    if not run.zero_cost:
        note += f"; NOT zero cost, answers' versions: {run.versions} (the real model ran)"
    if run.missing or run.errors:
        note += f"; {run.missing} missing, errors {run.errors}"
    targets = _target_notes(mode, run)
    if targets:
        note += f"; {targets}"
    if run.per_message == 1:
        table.add("5", what, run.worker_ms_per_message, "CPU-ms/msg", note=note)
    else:
        table.add("5", what, run.worker_us_per_input, "CPU-µs/in", note=note)


def render_host(runs: dict[tuple[str, int, str], FloodRun]) -> str:
    """The host rows side by side, targets next to them."""
    head = (
        f"| {'zero cost':<19} | {'in/msg':>6} | {'encoding':<8} | {'CPU ms/msg':>10} | "
        f"{'CPU µs/in':>9} | {'msg/s':>8} | {'inputs/s':>9} | {'driver':>6} | "
        f"{'broker ms/msg':>13} | {'pad eff':>7} | target"
    )
    lines = [head, "|" + "---|" * 11]
    real = sorted({v for run in runs.values() if not run.zero_cost for v in run.versions})
    for (mode, per_message, encoding), run in runs.items():
        s = run.summary()
        lines.append(
            f"| {mode:<19} | {per_message:>6} | {encoding:<8} | "
            f"{fmt(run.worker_ms_per_message, 3):>10} | {fmt(run.worker_us_per_input, 1):>9} | "
            f"{fmt(run.messages_per_s, 0):>8} | {fmt(run.inputs_per_s, 0):>9} | "
            f"{s['driver_cores']:>6.2f} | {s['broker_cpu_ms_per_message']:>13.3f} | "
            f"{pad_text(padding_of(run.timing)):>7} | {_target_notes(mode, run)}"
        )
    lines.append(
        "(driver: the flood's own CPU in cores over the window; near 1.0 it would be the "
        "bottleneck)"
    )
    if real:
        lines.append(f"NOT ZERO COST: some answers came from {real}: these are the real model's")
    return "\n".join(lines)
