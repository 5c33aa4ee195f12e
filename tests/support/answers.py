"""Reads answers from a response topic (no consumer group), keyed by their ``id``."""

from __future__ import annotations

import time
from collections.abc import Hashable, Set
from types import TracebackType
from typing import Any, Self

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from streams.client import start_reading


class AnswerReader:
    """Assigns every partition of ``topic`` at its end on entry; ``collect`` gathers by id.

    ``answers`` keeps the first answer for each id, ``duplicates`` counts the later ones and
    ``mismatched`` those whose outputs or error differ from the first.
    """

    def __init__(self, bootstrap: str, topic: str, *, from_beginning: bool = False) -> None:
        self.topic = topic
        self.from_beginning = from_beginning
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        self.answers: dict[Hashable, dict[str, Any]] = {}
        self.records: dict[Hashable, ConsumerRecord[bytes, bytes]] = {}
        self.duplicates = 0
        self.mismatched = 0

    async def __aenter__(self) -> Self:
        await start_reading(
            self.consumer, [self.topic], from_beginning=self.from_beginning, timeout_s=20
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.consumer.stop()

    def _take(self, record: ConsumerRecord[bytes, bytes]) -> None:
        answer = orjson.loads(record.value)
        key = answer.get("id")
        if key in self.answers:
            self.duplicates += 1
            first = self.answers[key]
            if first.get("outputs") != answer.get("outputs") or first.get("error") != answer.get(
                "error"
            ):
                self.mismatched += 1
            return
        self.answers[key] = answer
        self.records[key] = record

    async def poll(self, timeout_s: float = 0.5) -> int:
        """Read what has arrived; returns how many records were read."""
        batches = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=5000)
        count = 0
        for records in batches.values():
            for record in records:
                self._take(record)
                count += 1
        return count

    async def collect(self, ids: Set[Hashable], timeout_s: float) -> dict[Hashable, dict[str, Any]]:
        """Wait until every id in ``ids`` has an answer (TimeoutError says how many are missing)."""
        deadline = time.monotonic() + timeout_s
        while not ids <= self.answers.keys():
            if time.monotonic() > deadline:
                missing = len(ids - self.answers.keys())
                raise TimeoutError(f"{missing} of {len(ids)} answers missing after {timeout_s} s")
            await self.poll()
        return {key: self.answers[key] for key in ids}
