"""The soak: a worker under steady load for a long time, hostile messages mixed in.

``make soak`` (30 minutes): starts the embedded broker and one worker, measures the worker's
saturation, then sends requests at half of it (``--load``) for ``--minutes``, with one message in
``--hostile-every`` hostile (invalid JSON, wrong shapes, oversized, an unknown model, a refused
reply-to).

Saturation is the highest *steady* rate the worker keeps up with: a backlog of ``--backlog``
requests answered as fast as it can gives a first estimate (full batches), then steady rates
from 80 % of it downwards are tried for ``--probe-s`` seconds each, and the first one the worker
keeps up with (less than a second's worth of requests unanswered at the end) is the
saturation. A backlog alone overestimates it: requests arriving one by one make smaller
batches than a backlog does. Every ``--sample-s`` it prints the worker's RSS and open file
descriptors. At the end::

    soak: minutes=30.0 rate=... sent=... answered=... lost=0 dead_lettered=... (hostile ...)
          duplicates=0 rss_mib start=... end=... growth=1.2% fds start=... end=...

RSS "start" is taken after the warm-up (``--warmup-fraction`` of the run: allocators and caches
fill up first).

The embedded broker (Tansu 0.6.0, memory storage) keeps every batch it is sent, and on each fetch
that has data it lists every batch stored in that partition: its cost grows with the run, and at
~90 requests/s on 4 partitions it took a full core within minutes and stalled at 19 minutes. So
the soak spreads its topics over ``--partitions`` (16), and runs the worker with a fetch long-poll
of ``--fetch-max-wait-ms`` (500 ms, the Kafka default; kinfer's own default is 20 ms), so one fetch
collects several batches. Its samples show the broker's CPU and RSS beside the worker's.
``--bootstrap`` runs it against a real Kafka cluster instead.

Exits 1 when a request is lost, a hostile message is not dead-lettered, or RSS grew by 5 % or
more after the warm-up. Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.broker import EmbeddedBroker
from streams.client import start_reading
from tests.benchmarks.common import cpu_seconds
from tests.chaos.tools import request_value, rss_kib
from tests.support.topics import create_worker_topics
from tests.support.worker import WorkerProcess

#: hostile values, each answered with an error and dead-lettered: (value, headers)
HOSTILE: list[tuple[bytes, list[tuple[str, bytes]]]] = [
    (b'{"id": "h", "model": "minilm", "inputs": [', []),  # INVALID_JSON
    (b"\xff\xfe not utf-8", []),  # INVALID_JSON
    (b"[" * 2000 + b"]" * 2000, []),  # INVALID_JSON (too deep)
    (b'{"id": "h", "model": "minilm", "inputs": "not a list"}', []),  # INVALID_REQUEST
    (b'{"id": "h", "model": "minilm", "inputs": ["x"], "extra": 1}', []),  # INVALID_REQUEST
    (b'{"id": "h", "model": "gpt-9", "inputs": ["x"]}', []),  # UNKNOWN_MODEL
    (request_value("h", ["x"] * 5000), []),  # INPUT_TOO_LARGE (inputs)
    (request_value("h", ["y" * 200_000]), []),  # INPUT_TOO_LARGE (chars)
    (request_value("h", ["z"]), [("reply-to", b"__consumer_offsets")]),  # refused reply-to
]


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class BrokerSampler:
    """The embedded broker's CPU share since the last sample, and its RSS."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.last = (time.monotonic(), cpu_seconds([pid]) if pid else 0.0)

    def sample(self) -> str:
        if self.pid is None:
            return ""
        now, cpu = time.monotonic(), cpu_seconds([self.pid])
        share = (cpu - self.last[1]) / max(now - self.last[0], 1e-6)
        self.last = (now, cpu)
        return f" broker_cpu={share:.2f} broker_rss={rss_kib(self.pid) / 1024:.0f}MiB"


class Soak:
    def __init__(self, bootstrap: str, names: dict[str, str]) -> None:
        self.bootstrap = bootstrap
        self.names = names
        self.sent: set[str] = set()
        self.answers: dict[str, int] = {}
        self.hostile_sent = 0
        self.dead = 0
        self.counter = 0
        #: set by the reader whenever answers arrive
        self.progress = asyncio.Event()

    async def read(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=16 << 20,
        )
        dlq = self.names["request_topic"] + ".dlq"
        await start_reading(consumer, [self.names["response_topic"], dlq], timeout_s=30)
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, records in batches.items():
                    if tp.topic == dlq:
                        self.dead += len(records)
                        continue
                    for record in records:
                        request_id = orjson.loads(record.value).get("id")
                        if isinstance(request_id, str) and request_id.startswith("s"):
                            self.answers[request_id] = self.answers.get(request_id, 0) + 1
                self.progress.set()
        finally:
            await consumer.stop()

    async def send(self, producer: AIOKafkaProducer, count: int, rate: float | None,
                   hostile_every: int, until: float | None = None) -> None:  # fmt: skip
        started = time.monotonic()
        for n in range(count):
            if until is not None and time.monotonic() > until:
                break
            if hostile_every and n % hostile_every == hostile_every - 1:
                value, headers = HOSTILE[self.hostile_sent % len(HOSTILE)]
                self.hostile_sent += 1
                await producer.send(self.names["request_topic"], value, headers=headers)
            else:
                request_id = f"s{self.counter}"
                self.counter += 1
                self.sent.add(request_id)
                value = request_value(request_id, [f"soak sentence number {self.counter % 997}"])
                await producer.send(self.names["request_topic"], value, key=request_id.encode())
            if rate:
                delay = started + (n + 1) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        await producer.flush()

    async def wait_answered(self, timeout_s: float, stalled_s: float = 30.0) -> None:
        """Wait until every request sent is answered, ``timeout_s`` at most, or until no
        answer has come for ``stalled_s`` (a request unanswered then is lost)."""
        deadline = time.monotonic() + timeout_s
        last_progress, answered = time.monotonic(), len(self.answers)
        while len(self.sent - self.answers.keys()) and time.monotonic() < deadline:
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), 0.5)
            if len(self.answers) != answered:
                last_progress, answered = time.monotonic(), len(self.answers)
            elif time.monotonic() - last_progress > stalled_s:
                return


async def sustained_rate(
    run: Soak, producer: AIOKafkaProducer, burst: float, args: argparse.Namespace
) -> float:
    """The highest steady rate, from 80 % of ``burst`` down, that the worker keeps up with."""
    rate = burst * 0.8
    while rate > 5:
        until = time.monotonic() + args.probe_s
        await run.send(producer, int(rate * args.probe_s * 2), rate, 0, until=until)
        await asyncio.sleep(1.0)
        behind = len(run.sent - run.answers.keys())
        kept_up = behind < rate
        print(f"probe {rate:.0f} req/s: {behind} unanswered after {args.probe_s:.0f}s", flush=True)
        await run.wait_answered(120)  # drain before the next step
        if kept_up:
            return rate
        rate *= 0.8
    return rate


async def soak(
    args: argparse.Namespace, bootstrap: str, broker_pid: int | None = None
) -> dict[str, Any]:
    names = await create_worker_topics(bootstrap, "soak", partitions=args.partitions)
    run = Soak(bootstrap, names)
    stop = asyncio.Event()
    broker = BrokerSampler(broker_pid)
    settings = {**names, "fetch_max_wait_ms": str(args.fetch_max_wait_ms)}
    with WorkerProcess(bootstrap, settings, ready_timeout_s=300) as worker:
        reader = asyncio.create_task(run.read(stop))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            # saturation: a backlog, answered as fast as the worker can
            await asyncio.sleep(2.0)
            started = time.monotonic()
            await run.send(producer, args.backlog, None, 0)
            await run.wait_answered(600)
            burst = len(run.answers) / (time.monotonic() - started)
            print(f"backlog answered at {burst:.0f} req/s", flush=True)
            saturation = burst if args.rate else await sustained_rate(run, producer, burst, args)
            rate = args.rate or saturation * args.load
            print(f"saturation {saturation:.0f} req/s; soaking at {rate:.0f} req/s", flush=True)
            duration = args.minutes * 60
            begin = time.monotonic()
            baseline_at = begin + duration * args.warmup_fraction
            baseline: tuple[int, int] | None = None
            samples = []
            soaking = asyncio.create_task(
                run.send(
                    producer,
                    int(rate * duration * 2),
                    rate,
                    args.hostile_every,
                    until=begin + duration,
                )
            )
            while not soaking.done():
                remaining = begin + duration - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.sleep(min(args.sample_s, remaining))
                sample = (rss_kib(worker.pid), fds(worker.pid))
                samples.append(sample)
                if baseline is None and time.monotonic() >= baseline_at:
                    baseline = sample
                lag = len(run.sent) - len(run.answers)
                print(
                    f"t={time.monotonic() - begin:6.0f}s rss={sample[0] / 1024:.0f}MiB "
                    f"fds={sample[1]} sent={len(run.sent)} answered={len(run.answers)} "
                    f"unanswered={lag} dead_lettered={run.dead}{broker.sample()}",
                    flush=True,
                )
            await soaking
            # a backlog left by a slower stretch is drained, not counted lost
            await run.wait_answered(1800)
            await asyncio.sleep(2.0)
            end = (rss_kib(worker.pid), fds(worker.pid))
        finally:
            stop.set()
            await reader
            await producer.stop()
    start = baseline or (samples[0] if samples else end)
    lost = len(run.sent - run.answers.keys())
    return {
        "minutes": args.minutes,
        "burst_rps": round(burst, 1),
        "saturation_rps": round(saturation, 1),
        "rate_rps": round(rate, 1),
        "partitions": args.partitions,
        "fetch_max_wait_ms": args.fetch_max_wait_ms,
        "sent": len(run.sent),
        "answered": len(run.answers),
        "lost": lost,
        "duplicates": sum(n - 1 for n in run.answers.values()),
        "hostile_sent": run.hostile_sent,
        "dead_lettered": run.dead,
        "rss_mib_start": round(start[0] / 1024, 1),
        "rss_mib_end": round(end[0] / 1024, 1),
        "rss_growth_pct": round(100.0 * (end[0] - start[0]) / start[0], 2),
        "fds_start": start[1],
        "fds_end": end[1],
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--load", type=float, default=0.5, help="fraction of saturation")
    parser.add_argument("--rate", type=float, help="requests/s (default: load x saturation)")
    parser.add_argument("--backlog", type=int, default=4000, help="requests of the saturation run")
    parser.add_argument("--probe-s", type=float, default=20.0, help="seconds per steady rate")
    parser.add_argument("--hostile-every", type=int, default=20)
    parser.add_argument("--sample-s", type=float, default=30.0)
    parser.add_argument("--warmup-fraction", type=float, default=0.1)
    parser.add_argument("--partitions", type=int, default=16, help="of the soak's topics")
    parser.add_argument(
        "--fetch-max-wait-ms", type=int, default=500, help="the worker's KINFER_FETCH_MAX_WAIT_MS"
    )
    parser.add_argument("--bootstrap", help="a Kafka cluster's host:port (default: embedded)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.bootstrap:
        result = asyncio.run(soak(args, args.bootstrap))
    else:
        with EmbeddedBroker(silent=True) as broker:
            result = asyncio.run(soak(args, broker.bootstrap, broker.pid))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(
        f"soak: minutes={result['minutes']} rate={result['rate_rps']} req/s "
        f"(saturation {result['saturation_rps']}) sent={result['sent']} "
        f"answered={result['answered']} lost={result['lost']} "
        f"duplicates={result['duplicates']} dead_lettered={result['dead_lettered']} "
        f"(hostile {result['hostile_sent']}) rss_mib start={result['rss_mib_start']} "
        f"end={result['rss_mib_end']} growth={result['rss_growth_pct']}% "
        f"fds start={result['fds_start']} end={result['fds_end']}"
    )
    failed = (
        result["lost"] > 0
        or result["dead_lettered"] < result["hostile_sent"]
        or result["rss_growth_pct"] >= 5.0
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
