"""Crash safety (at-least-once): kill -9 the worker at random moments while it is serving.

Produces ``--requests`` requests up front, starts a worker, and ``--kills`` times kills it with
SIGKILL (its own PID only) at a random moment while answers are flowing, starting a fresh worker
right after each kill. Every answer is read from the response topic; at the end it prints::

    sent=20000 answered=20000 lost=0 duplicates=1234 (identical 1234, differing 0)

``answered`` counts distinct request ids with at least one answer; ``duplicates`` counts the
answers after the first for an id (redeliveries of requests whose offset was not yet committed
when the worker died). A duplicate is *identical* when it carries the same id, model, version and
error as the first and the same outputs to within 1e-5 (a redelivered input may run in a batch of
another shape; XLA then rounds the last float bits differently). Exits 1 unless lost == 0, every
duplicate is identical and the kills happened as asked.

    python -m tests.chaos.kill_worker --requests 20000 --kills 4

Uses the broker named by ``--bootstrap`` or an embedded Tansu of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker
from tests.support.worker import WorkerProcess

SUBJECTS = ["Kafka", "a jitted encoder", "the night train", "Faust", "东京的天气", "la mer"]
VERBS = ["batches", "answers", "drifts past", "embeds", "forgets", "keeps"]
#: outputs of a duplicate may differ from the first answer's by this much (batch-shape rounding)
OUTPUT_ATOL = 1e-5

Progress = Callable[[str], None]


def sentence(i: int) -> str:
    """A short, varied sentence for request ``i``."""
    return f"{SUBJECTS[i % 6]} {VERBS[(i // 6) % 6]} request number {i}."


def request_value(request_id: str, inputs: Sequence[str]) -> bytes:
    return orjson.dumps({"id": request_id, "model": "minilm", "inputs": list(inputs)})


@dataclass
class ChaosResult:
    """What a chaos run saw."""

    sent: int = 0
    answered: int = 0
    duplicates: int = 0
    differing: int = 0
    errors: int = 0
    kills: int = 0
    kills_while_processing: int = 0
    max_output_diff: float = 0.0
    seconds: float = 0.0
    kill_log: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.sent - self.answered

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.differing == 0 and self.errors == 0

    def line(self) -> str:
        return (
            f"sent={self.sent} answered={self.answered} lost={self.lost} "
            f"duplicates={self.duplicates} (identical {self.duplicates - self.differing}, "
            f"differing {self.differing})"
        )


class Collector:
    """Reads every partition of the response topic from the beginning; first answer per id."""

    def __init__(self, bootstrap: str, topic: str, result: ChaosResult) -> None:
        self.topic = topic
        self.result = result
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        self.first: dict[str, tuple[Any, Any, Any, np.ndarray | None]] = {}

    async def start(self, partitions: int) -> None:
        await self.consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def poll(self, timeout_s: float = 0.2) -> int:
        batches = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=5000)
        count = 0
        for records in batches.values():
            for record in records:
                assert record.value is not None
                self._take(orjson.loads(record.value))
                count += 1
        return count

    def _take(self, answer: dict[str, Any]) -> None:
        rid = answer.get("id")
        outputs = answer.get("outputs")
        vector = None if outputs is None else np.asarray(outputs, dtype=np.float32)
        summary = (answer.get("model"), answer.get("version"), answer.get("error"), vector)
        if not isinstance(rid, str):
            self.result.errors += 1
            return
        first = self.first.get(rid)
        if first is None:
            self.first[rid] = summary
            self.result.answered = len(self.first)
            if answer.get("error") is not None:
                self.result.errors += 1
            return
        self.result.duplicates += 1
        same = first[:3] == summary[:3]
        if same and first[3] is not None and vector is not None:
            if first[3].shape != vector.shape:
                same = False
            else:
                diff = float(np.max(np.abs(first[3] - vector))) if vector.size else 0.0
                self.result.max_output_diff = max(self.result.max_output_diff, diff)
                same = diff <= OUTPUT_ATOL
        elif same:
            same = (first[3] is None) == (vector is None)
        if not same:
            self.result.differing += 1


async def produce_requests(bootstrap: str, topic: str, count: int, prefix: str) -> list[str]:
    """Produce ``count`` one-input requests (keys spread them over the partitions)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    ids = [f"{prefix}-{i}" for i in range(count)]
    try:
        futures = [
            await producer.send(topic, request_value(rid, [sentence(i)]), key=rid.encode())
            for i, rid in enumerate(ids)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return ids


def kill_points(requests: int, kills: int, rng: random.Random) -> list[int]:
    """Answered-count thresholds, one random point in each of ``kills`` equal slices of 5-85 %."""
    low, high = 0.05 * requests, 0.85 * requests
    width = (high - low) / max(kills, 1)
    return [int(low + width * (k + rng.random())) for k in range(kills)]


async def run_chaos(
    bootstrap: str,
    *,
    requests: int,
    kills: int,
    seed: int | None = None,
    timeout_s: float = 900.0,
    settings: dict[str, str] | None = None,
    progress: Progress = print,
    log_dir: Path | None = None,
) -> ChaosResult:
    """Produce ``requests``, kill -9 the worker ``kills`` times while it serves, count answers."""
    rng = random.Random(seed)
    suffix = uuid.uuid4().hex[:8]
    names = {
        "request_topic": f"chaos-requests-{suffix}",
        "response_topic": f"chaos-responses-{suffix}",
        "app_id": f"chaos-app-{suffix}",
        **(settings or {}),
    }
    partitions = 4
    await ensure_topics(
        bootstrap, {names["request_topic"]: partitions, names["response_topic"]: partitions}
    )
    result = ChaosResult()
    started = time.monotonic()
    deadline = started + timeout_s
    collector = Collector(bootstrap, names["response_topic"], result)
    await collector.start(partitions)
    generation = 0

    def new_worker() -> WorkerProcess:
        nonlocal generation
        generation += 1
        log_path = None if log_dir is None else log_dir / f"chaos-worker-{generation}.log"
        return WorkerProcess(bootstrap, names, log_path=log_path)

    worker = new_worker()
    try:
        ids = await produce_requests(bootstrap, names["request_topic"], requests, f"c{suffix}")
        result.sent = len(ids)
        progress(f"produced {result.sent} requests to {names['request_topic']}")
        worker.start(wait=False)
        points = kill_points(requests, kills, rng)
        progress(f"kill points (answered ids): {points}")
        last_report = 0.0
        while result.answered < result.sent:
            if time.monotonic() > deadline:
                progress(f"timed out after {timeout_s:.0f}s")
                break
            got = await collector.poll()
            if worker.proc is not None and worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited by itself:\n{worker.log_tail()}")
            if points and result.answered >= points[0] and got > 0:
                # answers are flowing: the worker is mid-stream; kill it after a random pause
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                flowing = await collector.poll(0.05) > 0 or got > 0
                worker.kill9()
                worker.close()
                points.pop(0)
                result.kills += 1
                result.kills_while_processing += int(flowing)
                note = (
                    f"kill -9 #{result.kills} (pid {worker.pid}) at answered={result.answered} "
                    f"t={time.monotonic() - started:.1f}s"
                )
                result.kill_log.append(note)
                progress(note)
                worker = new_worker()
                worker.start(wait=False)
            now = time.monotonic()
            if now - last_report > 5:
                last_report = now
                progress(
                    f"t={now - started:5.1f}s answered={result.answered}/{result.sent} "
                    f"duplicates={result.duplicates} kills={result.kills}"
                )
        # linger a little so that late redeliveries are counted (and checked) too
        linger_until = time.monotonic() + 2.0
        while time.monotonic() < linger_until:
            await collector.poll()
    finally:
        await collector.stop()
        if worker.proc is not None and worker.proc.poll() is None:
            await asyncio.to_thread(worker.terminate, 20)
        worker.close()
    result.seconds = time.monotonic() - started
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.kill_worker",
        description="Produce N requests, kill -9 the kinfer worker at random moments while it "
        "serves (restarting it each time), and check that no request is lost.",
    )
    parser.add_argument("--requests", type=int, default=20_000, help="requests to produce")
    parser.add_argument("--kills", type=int, default=4, help="kill -9s of the worker (>= 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill moments")
    parser.add_argument(
        "--bootstrap", default=None, help="broker host:port (default: an embedded Tansu)"
    )
    parser.add_argument("--timeout", type=float, default=1200.0, help="give up after seconds")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep worker logs here")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.kills < 1:
        parser.error("--requests and --kills must be at least 1")

    def progress(text: str) -> None:
        print(text, flush=True)

    async def go(bootstrap: str) -> ChaosResult:
        return await run_chaos(
            bootstrap,
            requests=args.requests,
            kills=args.kills,
            seed=args.seed,
            timeout_s=args.timeout,
            progress=progress,
            log_dir=args.log_dir,
        )

    if args.bootstrap:
        result = asyncio.run(go(args.bootstrap))
    else:
        with EmbeddedBroker(silent=True) as broker:
            progress(f"embedded Tansu broker on {broker.bootstrap}")
            result = asyncio.run(go(broker.bootstrap))
    print(
        f"kills={result.kills} (while processing: {result.kills_while_processing}) "
        f"max_output_diff={result.max_output_diff:.2e} error_answers={result.errors} "
        f"seconds={result.seconds:.1f}"
    )
    print(result.line(), flush=True)
    return 0 if result.ok and result.kills >= args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
