"""Fresh per-test topic and consumer-group names for a worker, as WorkerProcess settings."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Collection

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.admin import ensure_topics


def worker_names(prefix: str) -> dict[str, str]:
    """``request_topic``, ``response_topic`` and ``app_id`` unique to this call."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "request_topic": f"{prefix}-requests-{suffix}",
        "response_topic": f"{prefix}-responses-{suffix}",
        "app_id": f"{prefix}-app-{suffix}",
    }


async def create_worker_topics(bootstrap: str, prefix: str, partitions: int = 4) -> dict[str, str]:
    """Fresh names (see worker_names) with their request and response topics created."""
    names = worker_names(prefix)
    await ensure_topics(
        bootstrap, {names["request_topic"]: partitions, names["response_topic"]: partitions}
    )
    return names


async def wait_for_topics(
    bootstrap: str, topics: Collection[str], timeout_s: float
) -> dict[str, int]:
    """Wait until every topic is listed (without producing: that would auto-create it on Tansu).

    Returns topic -> partition count; fails the test after ``timeout_s``.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not set(topics) <= set(await admin.list_topics()):
            assert time.monotonic() < deadline, f"topics {sorted(topics)} not listed in time"
            await asyncio.sleep(0.2)
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return {d["topic"]: len(d["partitions"]) for d in described}


async def committed_total(
    bootstrap: str, group: str, topic: str, partitions: int, *, expected: int, timeout_s: float
) -> int:
    """Sum of ``group``'s committed offsets on ``topic``, polled until it reaches ``expected``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            total = sum([await consumer.committed(tp) or 0 for tp in tps])
            if total >= expected or time.monotonic() > deadline:
                return total
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
