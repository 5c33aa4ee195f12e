"""Publishing answers through the Faust app's producer, and which produce errors are permanent.

Kafka says whether an error may pass: aiokafka's errors carry a ``retriable`` flag. A record the
broker refuses for good (too large, a topic that does not exist or that we may not write, an
invalid topic) must not be retried: it would hold its partition's turn forever, then every
partition through the in-flight limit. :func:`is_permanent` tells the two apart;
:class:`streams.pipeline.RequestPipeline` retries the rest and answers the first kind with a
typed error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from typing import Any

from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    ProducerClosed,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnknownTopicOrPartitionError,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streams.contract import Headers
from streams.errors import KinferError

__all__ = [
    "METADATA_WAIT_S",
    "FaustPublisher",
    "TopicNotFound",
    "causes",
    "error_name",
    "is_permanent",
    "is_too_large",
    "is_unknown_topic",
    "record_bytes",
]

#: Longest a send waits for a topic to show up in the metadata (the producer's own bound is its
#: request timeout, 20 minutes in Faust): past it, a topic that is still unknown is missing.
METADATA_WAIT_S = 10.0

#: Kafka errors flagged not retriable that still pass: a timeout, a producer being replaced.
_TRANSIENT = (KafkaTimeoutError, ProducerClosed)
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)


class TopicNotFound(KinferError):
    """A topic the producer found no metadata for within ``METADATA_WAIT_S``: it does not exist
    (and the broker does not create topics on first use)."""

    retriable = False

    def __init__(self, topic: str, waited_s: float) -> None:
        super().__init__(f"topic {topic!r} has no metadata after {waited_s:g}s: it does not exist")
        self.topic = topic


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from (Faust wraps aiokafka's errors in its own)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__


def is_permanent(exc: BaseException) -> bool:
    """Whether the broker refused the record for good: retrying the same record cannot help.

    A Kafka error whose ``retriable`` flag is false (record too large, topic authorisation,
    invalid topic, ...) except timeouts and a closed producer, and a topic that does not exist.
    Anything that is not a Kafka error (connection trouble, a test's fake) passes.
    """
    for cause in causes(exc):
        if isinstance(cause, TopicNotFound):
            return True
        if isinstance(cause, KafkaError):
            return not (cause.retriable or isinstance(cause, _TRANSIENT))
    return False


def error_name(exc: BaseException) -> str:
    """The name of the Kafka error behind ``exc`` (Faust wraps it in its own), else its own."""
    for cause in causes(exc):
        if isinstance(cause, KafkaError | TopicNotFound):
            return type(cause).__name__
    return type(exc).__name__


def is_too_large(exc: BaseException) -> bool:
    """Whether the record was refused for its size."""
    return any(isinstance(cause, _TOO_LARGE) for cause in causes(exc))


def is_unknown_topic(exc: BaseException) -> bool:
    """Whether the record's topic does not exist."""
    return any(
        isinstance(cause, TopicNotFound | UnknownTopicOrPartitionError) for cause in causes(exc)
    )


def record_bytes(key: bytes | None, value: bytes, headers: Headers) -> int:
    """Upper bound on the size of a record batch holding just this record.

    The measure the producer checks against its ``max_request_size`` and close to what the
    broker checks against ``max.message.bytes`` (uncompressed).
    """
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers))
    return size


class FaustPublisher:
    """Sends through ``app.producer``; the returned awaitable resolves on the broker's ack.

    A send waits at most ``metadata_wait_s`` for its topic's metadata, then fails with
    :class:`TopicNotFound` if the topic is still unknown (a timeout with the topic known means
    the producer's buffer is full: that one passes).
    """

    def __init__(self, app: Any, *, metadata_wait_s: float = METADATA_WAIT_S) -> None:
        self._app = app
        self._metadata_wait_s = metadata_wait_s

    async def publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers,
        *,
        partition: int | None = None,
        timestamp: float | None = None,
    ) -> Awaitable[object]:
        """Hand one record to the producer; await the result for its delivery.

        ``partition`` None lets the producer's partitioner pick it from the key; ``timestamp``
        (epoch seconds) None stamps the record with the time it is produced.
        """
        producer = self._app.producer
        try:
            async with asyncio.timeout(self._metadata_wait_s):
                delivery: Awaitable[object] = await producer.send(
                    topic, key, value, partition, timestamp, list(headers)
                )
        except TimeoutError:
            if _topic_known(producer, topic) is False:
                raise TopicNotFound(topic, self._metadata_wait_s) from None
            raise
        return delivery


def _topic_known(producer: Any, topic: str) -> bool | None:
    """Whether the producer's metadata lists ``topic`` (None when it cannot tell)."""
    client = getattr(getattr(producer, "_producer", None), "client", None)
    cluster = getattr(client, "cluster", None)
    if cluster is None:
        return None
    return cluster.partitions_for_topic(topic) is not None
