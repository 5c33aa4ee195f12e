"""A range of an existing topic as backfill rows: kinfer requests or the user's own JSON events.

The range is ``[start, end)`` on every partition (or those asked for): each bound is an offset,
an ISO 8601 timestamp (the first record at or after it, by record timestamp; a time without a
zone is UTC), ``earliest`` or ``latest``. The first run resolves the bounds to offsets
(`TopicSource.resolve`) and the state keeps them, so a resumed run reads the very same records
however long the topic has grown since.

Partitions are read one after the other, each in offset order: that is the input order of the
output. The text of a record is found by a field path (``streams.fieldpath``), ``$.inputs[*]``
by default (each input of a kinfer request is a row); ``$.note`` takes one text per event. A row's
id is the value at ``--id`` if given, else ``"<partition>:<offset>"``; a path with ``[*]`` adds
``":<i>"``, the input's index in the record. A record that is not JSON, or in which a path
matches nothing, is an error row naming its partition and offset.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from streams.backfill.offsets import PartitionRange, parse_bound, resolve_ranges
from streams.backfill.rows import Row, RowError, SourceError, check_input
from streams.errors import ErrorCode
from streams.fieldpath import FieldNotFound, FieldPath
from streams.security import PLAINTEXT, KafkaSecurity

#: The text path of a kinfer request record: each of its inputs.
DEFAULT_TEXT_PATH: Final = "$.inputs[*]"
#: A partition that yields nothing for this long before its end offset is an error.
_STALL_TIMEOUT_S: Final = 60.0


class TopicSource:
    """Records ``[start, end)`` of a topic, partition after partition (see the module docstring).

    Position: ``[range index, offset, input index within the record]`` of the next row.
    """

    progress_unit = "records"

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        start: str = "earliest",
        end: str = "latest",
        text: str = DEFAULT_TEXT_PATH,
        id_path: str | None = None,
        partitions: Sequence[int] | None = None,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self.bootstrap, self.topic, self.security = bootstrap, topic, security
        self.name = f"topic {topic}"
        self.start_text, self.end_text = start, end
        self._start = parse_bound(start, option="--start")
        self._end = parse_bound(end, option="--end")
        if self._start == "latest" or self._end == "earliest":
            raise SourceError("--start latest or --end earliest make an empty range")
        self.text, self.id_text = text, id_path
        self._text = FieldPath.parse(text)
        self._id = None if id_path is None else FieldPath.parse(id_path)
        if self._id is not None and self._id.has_wildcard:
            raise SourceError(f"--id {id_path!r} must name one value: no [*]")
        self.partitions = None if partitions is None else sorted(set(partitions))
        self.ranges: list[PartitionRange] = []
        self.progress_total: int | None = None

    def job(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "start": self.start_text,
            "end": self.end_text,
            "text": self.text,
            "id": self.id_text,
            "partitions": self.partitions,
        }

    def plan(self) -> dict[str, Any]:
        """The resolved ranges, for the state."""
        return {"ranges": [[r.partition, r.start, r.end] for r in self.ranges]}

    def use_plan(self, plan: dict[str, Any]) -> None:
        """Read the ranges a previous run resolved (``plan()``)."""
        self.ranges = [PartitionRange(p, s, e) for p, s, e in plan["ranges"]]
        self.progress_total = sum(r.end - r.start for r in self.ranges)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=8 * 1_048_576,
            **self.security.aiokafka(),
        )

    async def resolve(self) -> None:
        """Turn ``start``/``end`` into offsets per partition (sets ``ranges``)."""
        consumer = self._consumer()
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            self.ranges = await resolve_ranges(
                consumer, self.topic, partitions, self._start, self._end
            )
        except KafkaError as exc:
            raise SourceError(f"cannot read the offsets of topic {self.topic!r}: {exc}") from None
        finally:
            await consumer.stop()
        self.progress_total = sum(r.end - r.start for r in self.ranges)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[int]:
        if self.topic not in await consumer.topics():
            raise SourceError(f"topic {self.topic!r} does not exist")
        found = sorted(consumer.partitions_for_topic(self.topic) or ())
        if self.partitions is None:
            return found
        missing = set(self.partitions) - set(found)
        if missing:
            raise SourceError(
                f"topic {self.topic!r} has no partition {sorted(missing)} (it has {found})"
            )
        return list(self.partitions)

    async def rows(self, position: Any, number: int) -> AsyncGenerator[Row, None]:
        index, offset, skip = (0, None, 0) if position is None else position
        consumer = self._consumer()
        await consumer.start()
        try:
            for at in range(index, len(self.ranges)):
                part = self.ranges[at]
                begin = part.start if offset is None or at != index else int(offset)
                async for row in self._partition_rows(consumer, at, part, begin, skip, number):
                    number += 1
                    yield row
                skip = 0
        except KafkaError as exc:
            raise SourceError(f"reading topic {self.topic!r} failed: {exc}") from None
        finally:
            await consumer.stop()

    async def _partition_rows(
        self,
        consumer: AIOKafkaConsumer,
        at: int,
        part: PartitionRange,
        begin: int,
        skip: int,
        number: int,
    ) -> AsyncIterator[Row]:
        if begin >= part.end:
            return
        tp = TopicPartition(self.topic, part.partition)
        consumer.assign([tp])
        consumer.seek(tp, begin)
        done_before = sum(r.end - r.start for r in self.ranges[:at])
        last_progress = time.monotonic()
        while True:
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=2000)
            records = batches.get(tp, [])
            for record in records:
                if record.offset >= part.end:
                    return
                if record.offset < begin:
                    continue
                progress = done_before + record.offset + 1 - part.start
                for row in self._record_rows(record, at, number, skip, progress):
                    number += 1
                    yield row
                skip = 0
            if records:
                last_progress = time.monotonic()
            if await consumer.position(tp) >= part.end:
                return
            if time.monotonic() - last_progress > _STALL_TIMEOUT_S:
                raise SourceError(
                    f"partition {part.partition} of {self.topic!r} gave no record for "
                    f"{_STALL_TIMEOUT_S:.0f} s at offset {await consumer.position(tp)}, "
                    f"before the range's end {part.end}"
                )
            await asyncio.sleep(0)

    def _record_rows(
        self, record: ConsumerRecord[bytes, bytes], at: int, number: int, skip: int, progress: int
    ) -> list[Row]:
        where = f"partition {record.partition} offset {record.offset}"
        after = [at, record.offset + 1, 0]
        default_id = f"{record.partition}:{record.offset}"
        if record.value is None:
            error = RowError(ErrorCode.INVALID_JSON, f"{where} has no value (a tombstone)")
            return [Row(number, default_id, None, after, progress, error)]
        try:
            doc = orjson.loads(record.value)
        except orjson.JSONDecodeError as exc:
            error = RowError(ErrorCode.INVALID_JSON, f"{where} is not JSON: {exc}")
            return [Row(number, default_id, None, after, progress, error)]
        row_id: Any = default_id
        try:
            if self._id is not None:
                row_id = self._id.get(doc)
            values = self._text.find(doc)
        except FieldNotFound as exc:
            error = RowError(ErrorCode.INVALID_REQUEST, f"{where}: {exc}")
            return [Row(number, row_id, None, after, progress, error)]
        if row_id is None:
            error = RowError(ErrorCode.INVALID_REQUEST, f"{where}: the id {self.id_text} is null")
            return [Row(number, default_id, None, after, progress, error)]
        rows = []
        for i, value in enumerate(values):
            if i < skip:
                continue
            position = after if i + 1 == len(values) else [at, record.offset, i + 1]
            item_id = f"{row_id}:{i}" if self._text.has_wildcard else row_id
            label = f"{where} input {i}" if self._text.has_wildcard else where
            problem = check_input(value, label, self._text.text)
            rows.append(
                Row(number, item_id, None if problem else value, position, progress, problem)
            )
            number += 1
        return rows
