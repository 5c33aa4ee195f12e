"""A topic range's bounds, resolved to exact offsets per partition.

A bound is an offset, an ISO 8601 timestamp (the first record at or after it, by record
timestamp; no zone means UTC), ``earliest`` or ``latest``. The broker's ListOffsets answers
are checked against the records themselves, because not every broker answers per record:
Tansu 0.6 reports a partition's end as its last *batch*'s base offset + 1 (a partition whose
50 records were produced in one batch "ends" at 1), and may answer a timestamp with the base
offset of the batch holding it. So the end is found by reading from the reported one on, and a
timestamp's offset by reading from the reported one to the first record at or after it. On
Apache Kafka each check is one fetch that changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.backfill.rows import SourceError

Bound = int | datetime | str

#: A fetch that waits this long with nothing new means the partition's end is reached.
_QUIET_MS: Final = 300
#: At most this many fetches to find an exact bound (a topic written meanwhile keeps growing).
_MAX_FETCHES: Final = 200


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """The offsets ``[start, end)`` of one partition to read."""

    partition: int
    start: int
    end: int


def parse_bound(text: str, *, option: str) -> Bound:
    """An offset (int), a timestamp (aware datetime), or "earliest"/"latest"."""
    value = text.strip()
    if value in ("earliest", "latest"):
        return value
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SourceError(
            f"{option} {text!r} is neither an offset, an ISO timestamp "
            "(2026-11-30T12:00:00Z), 'earliest' nor 'latest'"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def resolve_ranges(
    consumer: AIOKafkaConsumer, topic: str, partitions: list[int], start: Bound, end: Bound
) -> list[PartitionRange]:
    """``[start, end)`` as offsets on each partition, clamped to the records it holds."""
    tps = [TopicPartition(topic, p) for p in partitions]
    first = await consumer.beginning_offsets(tps)
    reported = await consumer.end_offsets(tps)
    last = {tp: await _true_end(consumer, tp, first[tp], reported[tp]) for tp in tps}
    starts = await _offsets(consumer, start, tps, first, last)
    ends = await _offsets(consumer, end, tps, first, last)
    ranges = []
    for tp in tps:
        low = min(max(first[tp], starts[tp]), last[tp])
        ranges.append(PartitionRange(tp.partition, low, max(low, min(last[tp], ends[tp]))))
    return ranges


async def _offsets(
    consumer: AIOKafkaConsumer,
    bound: Bound,
    tps: list[TopicPartition],
    first: dict[TopicPartition, int],
    last: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    if bound == "earliest":
        return dict(first)
    if bound == "latest":
        return dict(last)
    if isinstance(bound, int):
        return dict.fromkeys(tps, bound)
    assert isinstance(bound, datetime)
    millis = int(bound.timestamp() * 1000)
    found = await consumer.offsets_for_times(dict.fromkeys(tps, millis))
    exact = {}
    for tp in tps:
        answer = found.get(tp)
        near = last[tp] if answer is None else max(first[tp], answer.offset)
        exact[tp] = await _first_at_or_after(consumer, tp, near, millis, last[tp])
    return exact


async def _true_end(
    consumer: AIOKafkaConsumer, tp: TopicPartition, first: int, reported: int
) -> int:
    """The offset after the partition's last record, reading on from the ``reported`` end."""
    if reported <= first:
        return reported
    end = reported
    async for offset, _ in _records(consumer, tp, reported - 1):
        end = max(end, offset + 1)
    return end


async def _first_at_or_after(
    consumer: AIOKafkaConsumer, tp: TopicPartition, near: int, millis: int, last: int
) -> int:
    """The first offset from ``near`` on whose record's timestamp is >= ``millis``."""
    if near >= last:
        return last
    async for offset, timestamp in _records(consumer, tp, near):
        if offset >= last:
            break
        if timestamp >= millis:
            return offset
    return last


async def _records(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int
) -> AsyncIterator[tuple[int, int]]:
    """(offset, timestamp) of the records of ``tp`` from ``offset`` until the partition is quiet."""
    consumer.assign([tp])
    consumer.seek(tp, offset)
    for _ in range(_MAX_FETCHES):
        batches = await consumer.getmany(tp, timeout_ms=_QUIET_MS, max_records=1000)
        records = batches.get(tp, [])
        if not records:
            return
        for record in records:
            if record.offset >= offset:
                yield record.offset, record.timestamp
