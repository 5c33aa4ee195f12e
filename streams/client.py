"""Request/reply over Kafka: send requests, wait for their answers (async and sync).

The client reads its answers from the reply topic without a consumer group: it takes every
partition, starts at the end, and matches answers to requests by ``id``.

Answers come back parsed, as dicts, in the encoding asked for (``encoding="base64"``: one base64
string per row); ``streams.wire_encoding.decode_rows(answer)`` gives the rows of either kind as a
float32 matrix.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams import contract
from streams.errors import KinferError
from streams.wire_encoding import DEFAULT_ENCODING, Encoding


class ReplyTimeout(KinferError, TimeoutError):
    """No answer arrived in time."""

    def __init__(self, missing: int, timeout_s: float) -> None:
        super().__init__(f"{missing} answer(s) did not arrive within {timeout_s:.1f}s")


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


class InferenceClient:
    """Produces requests and collects their answers from one reply topic."""

    def __init__(self, bootstrap: str, request_topic: str, reply_topic: str) -> None:
        self.bootstrap = bootstrap
        self.request_topic = request_topic
        self.reply_topic = reply_topic
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
        )

    async def __aenter__(self) -> Self:
        await self._producer.start()
        try:
            await start_reading(self._consumer, [self.reply_topic])
        except BaseException:
            await self._producer.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._consumer.stop()
        await self._producer.stop()

    async def send(
        self,
        inputs: Sequence[str],
        *,
        request_id: str | None = None,
        model: str = "minilm",
        key: bytes | None = None,
        deadline_ms: float | None = None,
        encoding: Encoding = DEFAULT_ENCODING,
    ) -> str:
        """Produce one request (acknowledged by the broker); returns its id."""
        request_id = request_id or uuid.uuid4().hex
        value = contract.encode_request(
            inputs,
            request_id=request_id,
            model=model,
            deadline_ms=deadline_ms,
            encoding=encoding,
        )
        headers = [
            (contract.REQUEST_ID_HEADER, request_id.encode()),
            (contract.REPLY_TO_HEADER, self.reply_topic.encode()),
        ]
        await self._producer.send_and_wait(self.request_topic, value, key=key, headers=headers)
        return request_id

    async def collect(self, ids: Sequence[str], timeout_s: float) -> dict[str, dict[str, Any]]:
        """Wait for the answers to ``ids``; raises ReplyTimeout if some do not come."""
        wanted = set(ids)
        answers: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while wanted - answers.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReplyTimeout(len(wanted - answers.keys()), timeout_s)
            batches = await self._consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for records in batches.values():
                for record in records:
                    answer = contract.decode_answer(record.value)
                    if answer.get("id") in wanted:
                        answers[answer["id"]] = answer
        return answers

    async def infer(
        self,
        inputs: Sequence[str],
        *,
        model: str = "minilm",
        timeout_s: float = 30.0,
        encoding: Encoding = DEFAULT_ENCODING,
    ) -> dict[str, Any]:
        """Send one request and return its answer (a result or an error record)."""
        request_id = await self.send(inputs, model=model, encoding=encoding)
        return (await self.collect([request_id], timeout_s))[request_id]


def infer_sync(
    bootstrap: str,
    request_topic: str,
    reply_topic: str,
    inputs: Sequence[str],
    *,
    model: str = "minilm",
    timeout_s: float = 30.0,
    encoding: Encoding = DEFAULT_ENCODING,
) -> dict[str, Any]:
    """Blocking request/reply, for scripts and the CLI."""

    async def run() -> dict[str, Any]:
        async with InferenceClient(bootstrap, request_topic, reply_topic) as client:
            return await client.infer(inputs, model=model, timeout_s=timeout_s, encoding=encoding)

    return asyncio.run(run())
