"""One request message's path: decode -> batch -> answer (and dead-letter) -> ready to ack.

Independent of Faust: the agent hands over an :class:`Inbound` and acks the Kafka offset only
once :meth:`RequestPipeline.handle` has returned, which happens only after every record it
publishes has been acknowledged by the broker.

Publishing (the retry loop is `streams.delivery.Deliverer`, shared with enrichment):

- A retriable failure (connection, leader change, timeout) is retried with backoff, never
  dropped: the message stays unacked, so uncommitted, until its records are delivered.
- A permanent refusal (:func:`streams.publisher.is_permanent`: record too large, a topic that
  does not exist, not authorised) is never retried. A result refused for its size is answered
  ``INPUT_TOO_LARGE`` instead; an answer the ``reply-to`` topic refuses goes, as an
  ``INVALID_REQUEST`` error, to the default response topic; both are dead-lettered. Answers are
  checked against ``max_answer_bytes`` before they are sent, so the first case is rare.
- When kinfer's own topics (response, dead-letter) refuse it for good, nothing is left to try:
  the pipeline records a failure (the worker's /live then fails) and raises
  :class:`~streams.errors.WorkerUnhealthy`; the message is not acked.
- Order: a message's records are published only once the previous message of its partition
  *for the same model* has had all of its records *delivered*, so a retried record never
  lands after a newer one. Answers of different models keep no order between them, so a slow
  model never holds another's answers. A message that reaches no model (not JSON, an unknown
  model...) is answered after every earlier message of its partition, and every later message
  after it: with one model, a partition's answers keep their offsets' order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from streams import contract
from streams.batch_jobs import BatchResult, describe
from streams.contract import Headers, JsonId, Limits, Request, Route
from streams.delivery import Deliverer
from streams.errors import (
    AnswerTooLarge,
    InternalError,
    ReplyToUnwritable,
    RequestError,
    WorkerUnhealthy,
    error_reference,
)
from streams.logs import REQUEST_ID
from streams.model_table import ModelTable, ServedVersion
from streams.observe import NO_OBSERVER, OK, AnswerObserver
from streams.publisher import error_name, is_too_large, record_bytes
from streams.records import Inbound, Outbound, dead_letter
from streams.replyto import ReplyToPolicy
from streams.turns import Turn, TurnOrder

log = logging.getLogger(__name__)

#: What a default Apache Kafka broker accepts (message.max.bytes is 1 048 588 bytes for a record
#: batch), less a margin for the estimate.
DEFAULT_MAX_ANSWER_BYTES = 1_048_576 - 1024


class Publisher(Protocol):
    """Publishes a record and returns once the broker acknowledged it (raises otherwise)."""

    async def publish(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers
    ) -> Awaitable[object]:
        """Hand the record to the producer; the returned awaitable is its delivery."""
        ...


@dataclass(slots=True)
class Prepared:
    """A message decoded in consumption order, waiting for its answer."""

    inbound: Inbound
    route: Route
    request: Request | None
    error: RequestError | None
    #: its place in the partition's order (lane: its model; answers keep their order within it)
    turn: Turn
    #: when the worker took it (the pipeline's clock): the start of its ``total_ms``
    arrived: float = 0.0
    #: estimated tokens of its inputs (the in-flight limit's second measure)
    tokens: int = 0
    #: the version it was routed to (held until it is answered or abandoned)
    served: ServedVersion | None = None
    #: its inputs as the version's batcher takes them
    payload: Any = None
    #: for the metrics: the answer's code ("OK" or the error code), the batcher's queue wait,
    #: and the code of the dead letter published for it
    code: str = ""
    queue_ms: float | None = None
    dead_letter_code: str | None = None

    @property
    def weight(self) -> int:
        """Inputs this message holds in flight."""
        return len(self.request.inputs) if self.request is not None else 1


class RequestPipeline:
    """Answers every request exactly once per delivery: a result or an error."""

    def __init__(
        self,
        *,
        models: ModelTable,
        publisher: Publisher,
        default_topic: str,
        dead_letter_topic: str,
        limits: Limits,
        reply_to: ReplyToPolicy | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        retry_backoff_s: tuple[float, float] = (0.1, 5.0),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.perf_counter,
        observer: AnswerObserver = NO_OBSERVER,
    ) -> None:
        self._models = models
        self._observer = observer
        self._publisher = publisher
        self._default_topic = default_topic
        self._dead_letter_topic = dead_letter_topic
        self._limits = limits
        self._reply_to = reply_to  # the reply-to allow-list (None: any legal topic name)
        self._max_answer_bytes = max_answer_bytes
        self._clock = clock
        self._deliverer = Deliverer(
            self._send,
            own_topics=(default_topic, dead_letter_topic),
            retry_backoff_s=retry_backoff_s,
            sleep=sleep,
        )
        self._order = TurnOrder()
        self.answered = 0
        self.errors = 0
        self.dead_lettered = 0
        #: why the pipeline cannot publish any more (its own topics refuse it), or None
        self.failure: str | None = None

    def prepare(self, inbound: Inbound) -> Prepared:
        """Decode a message; call in consumption order (it fixes the order of the answers)."""
        arrived = self._clock()
        route = contract.route_for(
            inbound.headers, inbound.key, self._default_topic, self._reply_to
        )
        request: Request | None = None
        error: RequestError | None = None
        served: ServedVersion | None = None
        payload: Any = None
        tokens = 0
        try:
            request = contract.decode_request(
                inbound.value, inbound.headers, self._limits, self._reply_to
            )
            served = self._models.resolve(request.model, request.version)
            served.outputs.check(request)
            payload = served.inputs.validate(request.inputs, self._limits)
            tokens = served.inputs.tokens(payload)
        except RequestError as exc:
            error = exc
        if served is not None:
            served.hold()
        # a message that reaches no model follows every model's earlier messages
        lane = served.name if served is not None else ""
        turn = self._order.take(inbound.topic, inbound.partition, lane)
        return Prepared(inbound, route, request, error, turn, arrived, tokens, served, payload)

    def abandon(self, prepared: Prepared) -> None:
        """Give up a prepared message without answering it (it stays uncommitted)."""
        self._order.pass_turn(prepared.turn)
        self._release(prepared)

    @staticmethod
    def _release(prepared: Prepared) -> None:
        if prepared.served is not None:
            prepared.served.release()
            prepared.served = None

    async def handle(self, prepared: Prepared) -> None:
        """Compute and publish the answer; returns when the broker has acknowledged it.

        Raises WorkerUnhealthy (nothing was answered) when the worker can no longer serve; the
        partition's later messages then raise it too, so none is answered out of order.
        """
        failed: WorkerUnhealthy | None = None
        # every log line about this request carries its id (streams.logs)
        context = REQUEST_ID.set(prepared.request.id if prepared.request is not None else None)
        try:
            answer = await self._answer(prepared)
            await prepared.turn.wait_previous()
            await self._deliver(prepared, answer)
            self._observe(prepared)
        except WorkerUnhealthy as exc:
            failed = exc
            raise
        finally:
            self._order.pass_turn(prepared.turn, failed)
            self._release(prepared)
            REQUEST_ID.reset(context)

    def _observe(self, prepared: Prepared) -> None:
        served, request = prepared.served, prepared.request
        self._observer.answered(
            model=served.name if served is not None else "",
            version=served.version if served is not None else "",
            code=prepared.code,
            inputs=len(request.inputs) if request is not None else 0,
            kafka_timestamp=prepared.inbound.timestamp,
            queue_ms=prepared.queue_ms,
            dead_letter_code=prepared.dead_letter_code,
        )

    # --- the answer -----------------------------------------------------------------------
    async def _answer(self, prepared: Prepared) -> list[Outbound]:
        """The records to publish for this message: the answer, and a dead letter if due."""
        inbound, request, route = prepared.inbound, prepared.request, prepared.route
        error, served = prepared.error, prepared.served
        if request is not None and served is not None and error is None:
            try:
                result = await served.submit(prepared.payload, request.deadline(inbound.timestamp))
            except WorkerUnhealthy:
                raise
            except RequestError as exc:
                error = exc
            except Exception as exc:  # a bug of ours: still answer, never crash
                error = self._internal("answering the request failed", exc, request.id)
            else:
                try:
                    value = self._encode(prepared, request, served, result)
                except Exception as exc:
                    error = self._internal("encoding the answer failed", exc, request.id)
                else:
                    size = record_bytes(inbound.key, value, route.headers)
                    if size <= self._max_answer_bytes:
                        self.answered += 1
                        prepared.code, prepared.queue_ms = OK, result.timing.get("queue_ms")
                        return [Outbound(route.topic, value, route.headers, "result")]
                    # a broker would refuse it for good: answer with an error instead
                    error = AnswerTooLarge(size, self._max_answer_bytes)
        assert error is not None
        return self._error_records(prepared, route.topic, error, dead_letter=error.dead_letter)

    def _encode(
        self, prepared: Prepared, request: Request, served: ServedVersion, result: BatchResult
    ) -> bytes:
        timing = describe(result)
        timing["total_ms"] = round((self._clock() - prepared.arrived) * 1000, 3)
        return served.outputs.encode(request, served.version, result.outputs, timing)

    def _internal(self, what: str, exc: Exception, request_id: JsonId) -> InternalError:
        reference = error_reference()
        log.error("%s, request %r (error reference %s)", what, request_id, reference, exc_info=exc)
        return InternalError(what, reference)

    def _request_id(self, prepared: Prepared) -> JsonId:
        if prepared.request is not None:
            return prepared.request.id
        return contract.peek_id(prepared.inbound.value or b"")

    def _error_records(
        self, prepared: Prepared, topic: str, error: RequestError, *, dead_letter: bool
    ) -> list[Outbound]:
        self.errors += 1
        prepared.code = error.code.value
        value = contract.encode_error(self._request_id(prepared), error)
        headers = prepared.route.headers
        if record_bytes(prepared.inbound.key, value, headers) > self._max_answer_bytes:
            headers = (contract.CONTENT_TYPE,)  # the echoed headers alone are too large
        records = [Outbound(topic, value, headers, "error")]
        if dead_letter:
            self.dead_lettered += 1
            prepared.dead_letter_code = error.code.value
            records.append(self._dead_letter(prepared.inbound, error))
        return records

    def _dead_letter(self, inbound: Inbound, error: RequestError) -> Outbound:
        return dead_letter(inbound, error, self._dead_letter_topic, self._max_answer_bytes)

    # --- publishing -----------------------------------------------------------------------
    async def _deliver(self, prepared: Prepared, records: list[Outbound]) -> None:
        """Publish ``records`` until each, or what stands in for it, is delivered."""

        def instead(record: Outbound, exc: Exception, dead_lettered: bool) -> list[Outbound]:
            return self._instead_of(prepared, record, exc, dead_lettered)

        await self._deliverer.deliver(prepared.inbound.key, records, instead)

    def _send(self, record: Outbound, key: bytes | None) -> Awaitable[Awaitable[object]]:
        return self._publisher.publish(record.topic, key, record.value, record.headers)

    def _instead_of(
        self, prepared: Prepared, record: Outbound, exc: Exception, dead_lettered: bool
    ) -> list[Outbound]:
        """What to publish in place of a record the broker refused for good."""
        reason = error_name(exc)
        inbound = prepared.inbound
        log.warning(
            "the broker refused the %s record of %s[%d]@%d for %r for good: %r",
            record.kind,
            inbound.topic,
            inbound.partition,
            inbound.offset,
            record.topic,
            exc,
        )
        key = inbound.key
        if record.kind == "result" and is_too_large(exc):
            self.answered -= 1
            size = record_bytes(key, record.value, record.headers)
            error: RequestError = AnswerTooLarge(size, self._max_answer_bytes)
            return self._error_records(prepared, record.topic, error, dead_letter=True)
        if record.kind != "dead-letter" and record.topic != self._default_topic:
            if record.kind == "result":
                self.answered -= 1
            else:
                self.errors -= 1  # counted again below
            error = ReplyToUnwritable(record.topic, reason, self._default_topic)
            return self._error_records(
                prepared, self._default_topic, error, dead_letter=not dead_lettered
            )
        self.failure = (
            f"the broker refused a {record.kind} record for {record.topic!r} for good "
            f"({reason}): kinfer's own topics must take its answers (check the topic's "
            "max.message.bytes against KINFER_MAX_ANSWER_BYTES, and the ACLs)"
        )
        log.error("%s", self.failure)
        raise WorkerUnhealthy(self.failure)
