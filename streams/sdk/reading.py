"""Reading a topic without a consumer group: every partition, from its end (or beginning)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.errors import KinferError


async def start_reading(
    consumer: AIOKafkaConsumer,
    topics: Sequence[str],
    *,
    from_beginning: bool = False,
    timeout_s: float = 15.0,
) -> list[TopicPartition]:
    """Start a group-less ``consumer`` on every partition of ``topics``, at the end (or beginning).

    Waits for the topics' metadata (raises KinferError after ``timeout_s``) and resolves the
    positions before returning, so nothing produced afterwards can be missed. On any failure the
    consumer is stopped again: left started, it would leak its connections and tasks.
    """
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        assigned: list[TopicPartition] = []
        for topic in topics:
            while not (found := consumer.partitions_for_topic(topic)):
                if time.monotonic() > deadline:
                    raise KinferError(f"topic {topic!r} does not exist or has no partitions")
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
            assigned += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(assigned)
        if from_beginning:
            await consumer.seek_to_beginning(*assigned)
        else:
            await consumer.seek_to_end(*assigned)
        for partition in assigned:
            await consumer.position(partition)
    except BaseException:
        await consumer.stop()
        raise
    return assigned
