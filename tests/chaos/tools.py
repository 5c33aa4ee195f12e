"""Small Kafka and process helpers shared by the chaos script and the reliability tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.structs import RecordMetadata

from streams.client import start_reading

Record = ConsumerRecord[bytes, bytes]
#: (value, key, headers, timestamp_ms or None)
Outgoing = tuple[bytes, bytes | None, Sequence[tuple[str, bytes]], int | None]


def request_value(request_id: str | int, inputs: Sequence[str], **extra: object) -> bytes:
    return orjson.dumps({"id": request_id, "model": "minilm", "inputs": list(inputs), **extra})


async def produce_records(
    bootstrap: str, topic: str, records: Sequence[Outgoing], *, max_request_size: int = 64 << 20
) -> list[RecordMetadata]:
    """Produce every record (in order per key); returns the broker's acks, in order."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=max_request_size
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, value, key=key, headers=list(headers), timestamp_ms=timestamp_ms
            )
            for value, key, headers, timestamp_ms in records
        ]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


class TopicReader:
    """Reads every partition of some topics from the beginning (no group)."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.records: list[Record] = []
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=64 * 1024 * 1024,
            fetch_max_bytes=128 * 1024 * 1024,
        )

    async def __aenter__(self) -> TopicReader:
        await start_reading(self.consumer, self.topics, from_beginning=True, timeout_s=20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, timeout_s: float = 0.2) -> list[Record]:
        batches = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=5000)
        got = [record for records in batches.values() for record in records]
        self.records += got
        return got

    async def wait_for(
        self, done: Callable[[list[Record]], bool], timeout_s: float, what: str = "records"
    ) -> list[Record]:
        """Poll until ``done(all records so far)``; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{what}: not done after {timeout_s}s ({len(self.records)} read)"
                )
            await self.poll()
        return self.records


def by_key(records: Sequence[Record]) -> dict[bytes, list[Record]]:
    out: dict[bytes, list[Record]] = {}
    for record in records:
        out.setdefault(record.key or b"", []).append(record)
    return out


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from /proc/PID/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def hwm_kib(pid: int) -> int:
    """Peak resident set size of ``pid`` in KiB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")
