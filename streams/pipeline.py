"""One request message's path: decode -> batch -> answer (and dead-letter) -> ready to ack.

Independent of Faust: the agent hands over an :class:`Inbound` and acks the Kafka offset only
once :meth:`RequestPipeline.handle` has returned, which happens only after every record it
publishes has been acknowledged by the broker. Publishing is retried with backoff, never
dropped: a message whose answer cannot be published is never acked, so it is never committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from streams import contract
from streams.batching import MicroBatcher, describe
from streams.contract import Headers, Limits, Request, Route
from streams.errors import InputTooLarge, InternalError, RequestError, UnknownModel

log = logging.getLogger(__name__)

#: A record to publish: topic, value, headers (the key is the request's).
Outbound = tuple[str, bytes, Headers]

DLQ_CODE_HEADER = "kinfer-error-code"
DLQ_MESSAGE_HEADER = "kinfer-error-message"
DLQ_TOPIC_HEADER = "kinfer-source-topic"
DLQ_PARTITION_HEADER = "kinfer-source-partition"
DLQ_OFFSET_HEADER = "kinfer-source-offset"


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


class Publisher(Protocol):
    """Publishes a record and returns once the broker acknowledged it (raises otherwise)."""

    async def publish(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers
    ) -> Awaitable[object]:
        """Hand the record to the producer; the returned awaitable is its delivery."""
        ...


@dataclass(frozen=True, slots=True)
class ServedModel:
    """What the pipeline needs to know of the model it serves."""

    name: str
    version: str


@dataclass(slots=True)
class Prepared:
    """A message decoded in consumption order, waiting for its answer."""

    inbound: Inbound
    route: Route
    request: Request | None
    error: RequestError | None
    turn: asyncio.Future[None]
    previous: asyncio.Future[None] | None

    @property
    def weight(self) -> int:
        """Inputs this message holds in flight."""
        return len(self.request.inputs) if self.request is not None else 1


class RequestPipeline:
    """Answers every request exactly once per delivery: a result or an error."""

    def __init__(
        self,
        *,
        batcher: MicroBatcher,
        publisher: Publisher,
        served: ServedModel,
        default_topic: str,
        dead_letter_topic: str,
        limits: Limits,
        max_answer_bytes: int = 8 * 1024 * 1024,
        retry_backoff_s: tuple[float, float] = (0.1, 5.0),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._batcher = batcher
        self._publisher = publisher
        self._served = served
        self._default_topic = default_topic
        self._dead_letter_topic = dead_letter_topic
        self._limits = limits
        self._max_answer_bytes = max_answer_bytes
        self._backoff = retry_backoff_s
        self._sleep = sleep
        self._tails: dict[tuple[str, int], asyncio.Future[None]] = {}
        self.answered = 0
        self.errors = 0
        self.dead_lettered = 0

    def prepare(self, inbound: Inbound) -> Prepared:
        """Decode a message; call in consumption order (it fixes the order of the answers)."""
        route = contract.route_for(inbound.headers, inbound.key, self._default_topic)
        request: Request | None = None
        error: RequestError | None = None
        try:
            request = contract.decode_request(inbound.value, inbound.headers, self._limits)
            if request.model != self._served.name or request.version not in (
                None,
                self._served.version,
            ):
                raise UnknownModel(
                    request.model, request.version, self._served.name, self._served.version
                )
        except RequestError as exc:
            error = exc
        partition = (inbound.topic, inbound.partition)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        previous = self._tails.get(partition)
        self._tails[partition] = turn
        return Prepared(inbound, route, request, error, turn, previous)

    async def handle(self, prepared: Prepared) -> None:
        """Compute and publish the answer; returns when the broker has acknowledged it."""
        try:
            answer = await self._answer(prepared)
            await self._publish_in_order(prepared, answer)
        finally:
            if not prepared.turn.done():
                prepared.turn.set_result(None)
            key = (prepared.inbound.topic, prepared.inbound.partition)
            if self._tails.get(key) is prepared.turn:
                del self._tails[key]

    async def _answer(self, prepared: Prepared) -> list[Outbound]:
        """The records to publish for this message: the answer, and a dead letter if due."""
        inbound, request = prepared.inbound, prepared.request
        error = prepared.error
        if request is not None and error is None:
            try:
                result = await self._batcher.submit(
                    request.inputs, request.deadline(inbound.timestamp)
                )
            except RequestError as exc:
                error = exc
            except Exception as exc:  # a bug of ours: still answer, never crash
                log.exception("unexpected failure answering %r", request.id)
                error = InternalError(f"unexpected failure: {exc!r}")
            else:
                value = contract.encode_result(
                    request, self._served.version, result.outputs, describe(result)
                )
                if len(value) <= self._max_answer_bytes:
                    self.answered += 1
                    return [(prepared.route.topic, value, prepared.route.headers)]
                # the producer would refuse it forever: answer with an error instead
                error = InputTooLarge(
                    "answer size in bytes",
                    len(value),
                    self._max_answer_bytes,
                    "MAX_MESSAGE_BYTES (answers may be 8 times it)",
                )
        assert error is not None
        self.errors += 1
        request_id = request.id if request is not None else contract.peek_id(inbound.value or b"")
        records: list[Outbound] = [
            (
                prepared.route.topic,
                contract.encode_error(request_id, error),
                prepared.route.headers,
            )
        ]
        if error.dead_letter:
            self.dead_lettered += 1
            records.append(
                (self._dead_letter_topic, inbound.value or b"", self._dlq_headers(inbound, error))
            )
        return records

    def _dlq_headers(self, inbound: Inbound, error: RequestError) -> Headers:
        return (
            *inbound.headers,
            (DLQ_CODE_HEADER, error.code.value.encode()),
            (DLQ_MESSAGE_HEADER, error.message[:1000].encode("utf-8", "replace")),
            (DLQ_TOPIC_HEADER, inbound.topic.encode()),
            (DLQ_PARTITION_HEADER, str(inbound.partition).encode()),
            (DLQ_OFFSET_HEADER, str(inbound.offset).encode()),
        )

    async def _publish_in_order(self, prepared: Prepared, records: list[Outbound]) -> None:
        if prepared.previous is not None:
            await asyncio.shield(prepared.previous)
        deliveries = []
        for topic, value, headers in records:
            deliveries.append(
                await self._publish_with_retry(topic, prepared.inbound.key, value, headers)
            )
        prepared.turn.set_result(None)  # the next message of this partition may send now
        for index, delivery in enumerate(deliveries):
            attempt = 0
            while True:
                try:
                    await delivery
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    attempt += 1
                    await self._backoff_after(exc, attempt, records[index][0])
                    topic, value, headers = records[index]
                    delivery = await self._publish_with_retry(
                        topic, prepared.inbound.key, value, headers
                    )

    async def _publish_with_retry(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers
    ) -> Awaitable[object]:
        attempt = 0
        while True:
            try:
                return await self._publisher.publish(topic, key, value, headers)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                await self._backoff_after(exc, attempt, topic)

    async def _backoff_after(self, exc: Exception, attempt: int, topic: str) -> None:
        first, cap = self._backoff
        delay = min(cap, first * 2 ** (attempt - 1))
        log.warning(
            "publishing to %s failed (attempt %d, retrying in %.1fs): %r",
            topic,
            attempt,
            delay,
            exc,
        )
        await self._sleep(delay)
