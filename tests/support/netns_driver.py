"""The load driver of the two-host failover test, run inside the broker's network namespace.

``python -m tests.support.netns_driver --bootstrap 10.77.12.1:9092 --hosts h1=10.77.12.11:6066,...``
waits for every worker host's ``/ready``, then runs three phases against one consumer group:

1. **both hosts**: a burst of requests answered as fast as the group can (throughput with 2);
2. **failover**: requests paced over time; after a few seconds the first host's link is cut
   (``ip -n NS link set DEV down``); its partitions move to the other host;
3. **one host**: the same burst again, answered by the survivor (throughput with 1).

It prints one JSON line: sent, answered, lost, duplicates, how long each partition went without
answers from the cut on (the move), the per-host bytes each veth sent while both served (the
load spread), and the two throughputs. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import time
import urllib.request
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.admin import ensure_topics
from streams.client import start_reading


def ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def tx_bytes(namespace: str, device: str) -> int:
    """Bytes the host's interface sent (its answers, mostly), from ``ip -s -j link``."""
    out = subprocess.run(
        ["ip", "-n", namespace, "-s", "-j", "link", "show", device],
        capture_output=True,
        check=True,
        timeout=10,
    ).stdout
    [link] = json.loads(out)
    return int(link["stats64"]["tx"]["bytes"])


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sent_at: dict[str, float] = {}
        self.partition_of: dict[str, int] = {}
        self.answered_at: dict[str, float] = {}
        self.answers: dict[str, int] = {}  # id -> how many answers
        self.errors = 0
        self.producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
        self.consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, enable_auto_commit=False)
        self.counter = 0

    async def send(self, count: int, rate: float | None) -> list[str]:
        ids = []
        started = time.monotonic()
        for _ in range(count):
            request_id = f"fo-{self.counter}"
            partition = self.counter % self.args.partitions
            self.counter += 1
            value = orjson.dumps(
                {"id": request_id, "model": "minilm", "inputs": [f"failover text {request_id}"]}
            )
            await self.producer.send(
                self.args.request_topic, value, key=request_id.encode(), partition=partition
            )
            self.sent_at[request_id] = time.monotonic()
            self.partition_of[request_id] = partition
            ids.append(request_id)
            if rate:
                delay = started + len(ids) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        await self.producer.flush()
        return ids

    async def read(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batches = await self.consumer.getmany(timeout_ms=200, max_records=2000)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    answer = orjson.loads(record.value)
                    request_id = answer.get("id")
                    if not isinstance(request_id, str):
                        continue
                    if "error" in answer:
                        self.errors += 1
                    self.answers[request_id] = self.answers.get(request_id, 0) + 1
                    self.answered_at.setdefault(request_id, now)

    async def wait_answered(self, ids: list[str], timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while not all(i in self.answers for i in ids):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        return time.monotonic()

    async def main(self) -> dict[str, Any]:
        args = self.args
        hosts = dict(item.split("=") for item in args.hosts.split(","))
        deadline = time.monotonic() + args.ready_timeout_s
        while not all(ready(address) for address in hosts.values()):
            if time.monotonic() > deadline:
                return {
                    "error": "workers not ready",
                    "ready": {h: ready(a) for h, a in hosts.items()},
                }
            await asyncio.sleep(0.5)
        await ensure_topics(
            args.bootstrap,
            {args.request_topic: args.partitions, args.response_topic: args.partitions},
        )
        await self.producer.start()
        await start_reading(self.consumer, [args.response_topic], timeout_s=30)
        stop = asyncio.Event()
        reader = asyncio.create_task(self.read(stop))
        cut_ns, cut_dev = args.cut.split(":")
        try:
            # 1. both hosts: a burst, and how many bytes each host sent while answering it
            before = {ns: tx_bytes(ns, args.device) for ns in hosts}
            started = time.monotonic()
            burst = await self.send(args.burst, None)
            finished = await self.wait_answered(burst, args.phase_timeout_s)
            two = len([i for i in burst if i in self.answers]) / (finished - started)
            spread = {ns: tx_bytes(ns, args.device) - before[ns] for ns in hosts}
            # 2. failover: paced requests; cut the first host's link a few seconds in
            paced = asyncio.create_task(self.send(args.paced, args.rate))
            await asyncio.sleep(args.cut_after_s)
            cut = ["ip", "-n", cut_ns, "link", "set", cut_dev, "down"]
            await asyncio.to_thread(subprocess.run, cut, check=True)
            cut_at = time.monotonic()
            paced_ids = await paced
            await self.wait_answered(paced_ids, args.phase_timeout_s)
            # 3. one host: the same burst
            started = time.monotonic()
            burst_one = await self.send(args.burst, None)
            finished = await self.wait_answered(burst_one, args.phase_timeout_s)
            one = len([i for i in burst_one if i in self.answers]) / (finished - started)
            await asyncio.sleep(2.0)  # late duplicates show
        finally:
            stop.set()
            await reader
            await self.consumer.stop()
            await self.producer.stop()
        # the longest each partition went without an answer from the cut on: the paced requests
        # keep coming, so a partition of the cut-off host shows the hand-over (answers produced
        # just before the cut but read after it do not hide it, as "first answer after" would)
        moves = {}
        for partition in range(args.partitions):
            ids = [i for i in paced_ids if self.partition_of[i] == partition]
            times = sorted(self.answered_at[i] for i in ids if i in self.answered_at)
            gaps = [b - a for a, b in itertools.pairwise(times) if b >= cut_at]
            moves[partition] = round(max(gaps, default=float("inf")), 2)
        sent = self.counter
        answered = len(self.answers)
        return {
            "sent": sent,
            "answered": answered,
            "lost": sent - answered,
            "duplicates": sum(n - 1 for n in self.answers.values()),
            "errors": self.errors,
            "partition_gap_s": moves,
            "max_partition_gap_s": max(moves.values()),
            "tx_bytes_both_serving": spread,
            "rate_two_hosts": round(two, 1),
            "rate_one_host": round(one, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--hosts", required=True, help="ns=ip:port,... of the workers' web ports")
    parser.add_argument("--cut", required=True, help="ns:device whose link goes down")
    parser.add_argument("--device", default="eth0")
    parser.add_argument("--request-topic", required=True)
    parser.add_argument("--response-topic", required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--burst", type=int, default=400)
    parser.add_argument("--paced", type=int, default=600)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--cut-after-s", type=float, default=5.0)
    parser.add_argument("--ready-timeout-s", type=float, default=150.0)
    parser.add_argument("--phase-timeout-s", type=float, default=90.0)
    args = parser.parse_args()

    async def run() -> dict[str, Any]:
        return await Run(args).main()  # aiokafka's clients are made inside the loop

    result = asyncio.run(run())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
