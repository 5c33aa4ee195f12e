"""The embedded broker's CPU under steady traffic, by how many batches it already stores.

    .venv/bin/python -m tests.benchmarks.broker_growth [--runs 4:10000:86,16:40000:86,...]

Tansu 0.6.0's memory storage keeps every batch it is sent (no retention; DeleteRecords is not
implemented) and, on each fetch that finds data, lists every batch stored in that partition. So
the same traffic costs it more the longer it has run. Each run (``PARTITIONS:STORED:RATE``) starts
a fresh broker, fills a request and a response topic with ``STORED`` one-record batches each
(what a soak at one request per batch leaves behind), then for ``--seconds`` sends ``RATE``
requests/s through a stand-in worker (a consumer group that copies each request to the response
topic) to a reader, with every consumer at aiokafka's default 500 ms fetch long-poll. It prints
the broker's CPU share (CPU-seconds per second, from /proc) and the requests' latency.
No model runs: the figure is the broker's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Producer

from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker
from tests.benchmarks.common import cpu_seconds

DEFAULT_RUNS = "4:10000:86,4:40000:86,16:40000:86,16:72000:40,16:150000:86"


@dataclass(frozen=True)
class Run:
    partitions: int
    stored: int
    rate: float


@dataclass(frozen=True)
class Figures:
    partitions: int
    stored_batches_per_topic: int
    rate_rps: float
    broker_cpu: float
    answered: int
    sent: int
    p50_ms: float
    p99_ms: float


def parse_runs(text: str) -> list[Run]:
    """``P:N:R,...`` into runs."""
    runs = []
    for part in text.split(","):
        partitions, stored, rate = part.split(":")
        runs.append(Run(int(partitions), int(stored), float(rate)))
    return runs


def fill(bootstrap: str, topic: str, run: Run) -> None:
    """``run.stored`` records, one per batch, over the topic's partitions (librdkafka is fast)."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 1, "log_level": 0}
    )
    for n in range(run.stored):
        while True:
            try:
                producer.produce(topic, b"x" * 150, partition=n % run.partitions)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush()


async def traffic(bootstrap: str, broker_pid: int, run: Run, seconds: float) -> Figures:
    """Requests at ``run.rate`` through a copying consumer group to a reader."""
    worker = AIOKafkaConsumer("req", bootstrap_servers=bootstrap, group_id="w")
    reader = AIOKafkaConsumer("resp", bootstrap_servers=bootstrap, group_id="r")
    copier = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    sender = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for client in (worker, reader, copier, sender):
        await client.start()
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []
    stop = asyncio.Event()

    async def copy() -> None:
        while not stop.is_set():
            for tp, records in (await worker.getmany(timeout_ms=200)).items():
                for record in records:
                    await copier.send("resp", record.value, partition=tp.partition)

    async def read() -> None:
        while not stop.is_set():
            batches = await reader.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    if record.value in sent_at:
                        latencies.append(now - sent_at.pop(record.value))

    try:
        for _ in range(300):  # both groups joined: 60 s at most
            if worker.assignment() and reader.assignment():
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)
        tasks = [asyncio.create_task(copy()), asyncio.create_task(read())]
        cpu_before, started, sent = cpu_seconds([broker_pid]), time.monotonic(), 0
        while time.monotonic() - started < seconds:
            value = f"m{sent}".encode()
            sent_at[value] = time.monotonic()
            sent += 1
            await sender.send("req", value)
            await asyncio.sleep(max(0.0, started + sent / run.rate - time.monotonic()))
        await asyncio.sleep(3.0)
        share = (cpu_seconds([broker_pid]) - cpu_before) / (time.monotonic() - started)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        for client in (worker, reader, copier, sender):
            await client.stop()
    latencies.sort()

    def percentile(q: float) -> float:
        return round(1000 * latencies[int(q * (len(latencies) - 1))], 0) if latencies else 0.0

    return Figures(
        run.partitions, run.stored, run.rate, round(share, 2), len(latencies), sent,
        percentile(0.5), percentile(0.99),
    )  # fmt: skip


async def measure(bootstrap: str, broker_pid: int, run: Run, seconds: float) -> Figures:
    await ensure_topics(bootstrap, {"req": run.partitions, "resp": run.partitions})
    fill(bootstrap, "req", run)
    fill(bootstrap, "resp", run)
    return await traffic(bootstrap, broker_pid, run, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="PARTITIONS:STORED:RATE,...")
    parser.add_argument("--seconds", type=float, default=30.0, help="of traffic per run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = []
    print("partitions  stored batches/topic  req/s  broker CPU  answered  p50 ms  p99 ms")
    for run in parse_runs(args.runs):
        with EmbeddedBroker(silent=True) as broker:
            assert broker.pid is not None
            figures = asyncio.run(measure(broker.bootstrap, broker.pid, run, args.seconds))
        results.append(figures)
        print(
            f"{figures.partitions:>10}  {figures.stored_batches_per_topic:>20}  "
            f"{figures.rate_rps:>5.0f}  {figures.broker_cpu:>10.2f}  "
            f"{figures.answered:>4}/{figures.sent:<4}  "
            f"{figures.p50_ms:>6.0f}  {figures.p99_ms:>6.0f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
