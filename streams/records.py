"""The records the pipeline consumes and publishes, and how a dead letter is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from streams.contract import Headers
from streams.errors import RequestError
from streams.publisher import record_bytes

__all__ = [
    "DLQ_CODE_HEADER",
    "DLQ_MESSAGE_HEADER",
    "DLQ_OFFSET_HEADER",
    "DLQ_PARTITION_HEADER",
    "DLQ_TOPIC_HEADER",
    "DLQ_VALUE_DROPPED_HEADER",
    "Inbound",
    "Outbound",
    "RecordKind",
    "dead_letter",
]

DLQ_CODE_HEADER = "kinfer-error-code"
DLQ_MESSAGE_HEADER = "kinfer-error-message"
DLQ_TOPIC_HEADER = "kinfer-source-topic"
DLQ_PARTITION_HEADER = "kinfer-source-partition"
DLQ_OFFSET_HEADER = "kinfer-source-offset"
#: On a dead letter whose copy of the request would pass the record size limit: the request
#: value's size in bytes (the value is left out; its headers too if they alone are too large).
DLQ_VALUE_DROPPED_HEADER = "kinfer-value-dropped"

RecordKind = Literal["result", "error", "dead-letter"]


@dataclass(frozen=True, slots=True)
class Outbound:
    """A record to publish (the key is the request's)."""

    topic: str
    value: bytes
    headers: Headers
    kind: RecordKind
    #: the partition to write to; None: the producer's partitioner picks it from the key
    partition: int | None = None
    #: the record's timestamp (epoch seconds); None: the time it is produced
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    """A consumed request record, as the pipeline needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: float  # epoch seconds: the record's produce time


def dead_letter(inbound: Inbound, error: RequestError, topic: str, max_bytes: int) -> Outbound:
    """The request, unchanged, with why it could not be answered (its value left out if the
    copy would pass the record size limit)."""
    own: Headers = (
        (DLQ_CODE_HEADER, error.code.value.encode()),
        (DLQ_MESSAGE_HEADER, error.message[:1000].encode("utf-8", "replace")),
        (DLQ_TOPIC_HEADER, inbound.topic.encode()),
        (DLQ_PARTITION_HEADER, str(inbound.partition).encode()),
        (DLQ_OFFSET_HEADER, str(inbound.offset).encode()),
    )
    value = inbound.value or b""
    headers: Headers = (*inbound.headers, *own)
    if record_bytes(inbound.key, value, headers) > max_bytes:
        dropped = (DLQ_VALUE_DROPPED_HEADER, str(len(value)).encode())
        value = b""
        headers = (*inbound.headers, *own, dropped)
        if record_bytes(inbound.key, value, headers) > max_bytes:
            headers = (*own, dropped)
    return Outbound(topic, value, headers, "dead-letter")
