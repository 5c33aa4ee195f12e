"""One route's path for an event: decode -> find its text -> batch -> enriched record -> ack.

Independent of Faust, like `streams.pipeline.RequestPipeline`: the route's agent hands over an
:class:`~streams.records.Inbound` and acks its offset only once :meth:`EnrichPipeline.handle`
has returned, which happens only after the enriched record (or the event's dead letter) was
acknowledged by the broker.

- **Same engine.** The text goes to the served version's batcher (`ModelTable.resolve`), the
  one request traffic uses: events of every route and requests are micro-batched together.
- **Placement.** An event of source partition ``p`` is written to partition ``p`` of the sink
  (modulo the sink's partition count, should the sink have fewer), with the source key and
  the source timestamp: the sink is co-partitioned with the source, whatever partitioner wrote
  the source.
- **Order.** An event's record is published only once the previous event of its source
  partition has had its record *delivered* (a dead letter counts): the sink keeps each source
  partition's order, and a retried record never lands after a newer one.
- **Failures.** An event that cannot be enriched (not JSON, not an object, a path that matches
  nothing, an input the model refuses, an enriched record too large) goes to the dead-letter
  topic, unchanged, with the reason in its headers (`streams.records.dead_letter`); it never
  stops the route. Publishing retries and permanent refusals are `streams.delivery`'s; when the
  route's own topics refuse it for good, the pipeline records a failure (the worker's /live then
  fails) and raises WorkerUnhealthy: the event is not acked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from streams.contract import Headers, JsonId, Limits, json_type
from streams.delivery import Deliverer
from streams.enrich.errors import EnrichedTooLarge, EventNotEnrichable, Unenrichable
from streams.enrich.record import (
    Event,
    encode_prediction,
    read_event,
    route_dead_letter,
    send_timestamp,
    sink_headers,
    splice,
)
from streams.enrich.route import EnrichRoute, RouteError
from streams.errors import (
    InternalError,
    RequestError,
    WorkerUnhealthy,
    error_reference,
)
from streams.model_table import ModelTable, ServedVersion
from streams.publisher import error_name, is_too_large, record_bytes
from streams.records import Inbound, Outbound
from streams.turns import Turn, TurnOrder

__all__ = ["EnrichPipeline", "PlacedPublisher", "PreparedEvent"]

log = logging.getLogger(__name__)


class PlacedPublisher(Protocol):
    """Publishes a record to a given partition with a given timestamp (`FaustPublisher`)."""

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
        """Hand the record to the producer; the returned awaitable is its delivery."""
        ...


@dataclass(slots=True)
class PreparedEvent:
    """An event read in consumption order, waiting for its prediction."""

    inbound: Inbound
    #: its place in its source partition's order
    turn: Turn
    event: Event | None = None
    #: the field its prediction goes under (the route's, or its model's default)
    output_field: str = ""
    error: RequestError | None = None
    event_id: JsonId = None
    #: the version it was routed to (held until it is written or abandoned)
    served: ServedVersion | None = None
    payload: Any = None
    tokens: int = 0

    @property
    def weight(self) -> int:
        """Inputs it holds in flight: one."""
        return 1


class EnrichPipeline:
    """Enriches every event of one route exactly once per delivery, or dead-letters it."""

    def __init__(
        self,
        *,
        route: EnrichRoute,
        models: ModelTable,
        publisher: PlacedPublisher,
        sink_partitions: int,
        limits: Limits,
        max_record_bytes: int,
        retry_backoff_s: tuple[float, float] = (0.1, 5.0),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if sink_partitions < 1:
            raise ValueError("sink_partitions must be at least 1")
        self.route = route
        self._models = models
        self._publisher = publisher
        self._sink_partitions = sink_partitions
        self._limits = limits
        self._max_bytes = max_record_bytes
        self._deliverer = Deliverer(
            self._send,
            own_topics=(route.sink, route.dead_letter_topic),
            retry_backoff_s=retry_backoff_s,
            sleep=sleep,
        )
        self._order = TurnOrder()
        self.enriched = 0
        self.dead_lettered = 0
        #: why the route cannot publish any more (its own topics refuse it), or None
        self.failure: str | None = None

    def prepare(self, inbound: Inbound) -> PreparedEvent:
        """Read an event; call in consumption order (it fixes the order of the records)."""
        prepared = PreparedEvent(inbound, self._order.take(inbound.topic, inbound.partition))
        route = self.route
        try:
            served = self._models.resolve(route.model, route.version)
            prepared.output_field = route.output_field_for(served.outputs.kind)
            event = read_event(
                inbound.value, route, prepared.output_field, self._limits.max_message_bytes
            )
            prepared.event, prepared.event_id = event, event.id
            prepared.payload = self._validate(served, event.value)
            prepared.tokens = served.inputs.tokens(prepared.payload)
        except Unenrichable as exc:
            prepared.error, prepared.event_id = exc.error, exc.event_id
        except RequestError as exc:
            prepared.error = exc
        except RouteError as exc:  # a model kind the route cannot write (checked at start)
            prepared.error = EventNotEnrichable(str(exc))
        except Exception as exc:  # a bug of ours: dead-letter the event, never stop the route
            prepared.error = self._internal("reading the event failed", exc, prepared)
        else:
            served.hold()
            prepared.served = served
        return prepared

    def _validate(self, served: ServedVersion, value: Any) -> Any:
        """The model's payload for one input, or the RequestError naming the text path."""
        path = self.route.text_path.text
        if served.inputs.kind == "text" and not isinstance(value, str):
            raise EventNotEnrichable(
                f"the text path {path} holds {json_type(value)}; the model "
                f"{served.name!r} takes a string"
            )
        try:
            return served.inputs.validate([value], self._limits)
        except RequestError as exc:  # its message names "inputs[0]": name the path instead
            exc.message = exc.message.replace("inputs[0]", f"the text at {path}")
            exc.args = (exc.message,)
            raise

    def abandon(self, prepared: PreparedEvent) -> None:
        """Give up a prepared event without writing it (it stays uncommitted)."""
        self._order.pass_turn(prepared.turn)
        self._release(prepared)

    async def handle(self, prepared: PreparedEvent) -> None:
        """Predict and publish; returns once the broker acknowledged the record.

        Raises WorkerUnhealthy (nothing was written) when the worker can no longer serve; the
        partition's later events then raise it too, so none is written out of order.
        """
        failed: WorkerUnhealthy | None = None
        try:
            records = await self._records(prepared)
            await prepared.turn.wait_previous()

            def instead(record: Outbound, exc: Exception, dead_lettered: bool) -> list[Outbound]:
                return self._instead_of(prepared, record, exc, dead_lettered)

            await self._deliverer.deliver(prepared.inbound.key, records, instead)
        except WorkerUnhealthy as exc:
            failed = exc
            raise
        finally:
            self._order.pass_turn(prepared.turn, failed)
            self._release(prepared)

    @staticmethod
    def _release(prepared: PreparedEvent) -> None:
        if prepared.served is not None:
            prepared.served.release()
            prepared.served = None

    # --- the records ----------------------------------------------------------------------
    async def _records(self, prepared: PreparedEvent) -> list[Outbound]:
        """The enriched record, or the event's dead letter."""
        error, served, event = prepared.error, prepared.served, prepared.event
        if error is None and served is not None and event is not None:
            try:
                result = await served.submit(prepared.payload, None)
            except WorkerUnhealthy:
                raise
            except RequestError as exc:
                error = exc
            except Exception as exc:  # a bug of ours: dead-letter it, never crash
                error = self._internal("enriching the event failed", exc, prepared)
            else:
                try:
                    record = self._enriched(prepared, served, event, result.outputs[0])
                except Exception as exc:
                    error = self._internal("writing the enriched event failed", exc, prepared)
                else:
                    size = record_bytes(prepared.inbound.key, record.value, record.headers)
                    if size <= self._max_bytes:
                        self.enriched += 1
                        return [record]
                    error = EnrichedTooLarge(
                        size, self._max_bytes
                    )  # a broker would refuse it for good
        assert error is not None
        return [self._dead_letter(prepared, error)]

    def _enriched(
        self, prepared: PreparedEvent, served: ServedVersion, event: Event, row: Any
    ) -> Outbound:
        """The enriched record: the event with the prediction spliced in, placed as its source."""
        inbound = prepared.inbound
        prediction = encode_prediction(served.outputs.kind, self.route.encoding, row)
        assert inbound.value is not None  # read_event refused tombstones
        value = splice(inbound.value, prepared.output_field, prediction, empty=event.empty)
        headers = sink_headers(inbound, served.name, served.version, prepared.event_id)
        return Outbound(
            self.route.sink,
            value,
            headers,
            "result",
            partition=inbound.partition % self._sink_partitions,
            timestamp=send_timestamp(inbound.timestamp),
        )

    def _dead_letter(self, prepared: PreparedEvent, error: RequestError) -> Outbound:
        self.dead_lettered += 1
        log.debug(
            "route %s: %s[%d]@%d dead-lettered: %s",
            self.route.name,
            prepared.inbound.topic,
            prepared.inbound.partition,
            prepared.inbound.offset,
            error.message,
        )
        return route_dead_letter(
            prepared.inbound, error, self.route, prepared.event_id, self._max_bytes
        )

    def _internal(self, what: str, exc: Exception, prepared: PreparedEvent) -> InternalError:
        reference = error_reference()
        inbound = prepared.inbound
        log.error(
            "route %s: %s, %s[%d]@%d (error reference %s)",
            self.route.name,
            what,
            inbound.topic,
            inbound.partition,
            inbound.offset,
            reference,
            exc_info=exc,
        )
        return InternalError(what, reference)

    # --- publishing -----------------------------------------------------------------------
    def _send(self, record: Outbound, key: bytes | None) -> Awaitable[Awaitable[object]]:
        return self._publisher.publish(
            record.topic,
            key,
            record.value,
            record.headers,
            partition=record.partition,
            timestamp=record.timestamp,
        )

    def _instead_of(
        self, prepared: PreparedEvent, record: Outbound, exc: Exception, dead_lettered: bool
    ) -> list[Outbound]:
        """What to publish in place of a record the broker refused for good."""
        inbound = prepared.inbound
        log.warning(
            "route %s: the broker refused the %s record of %s[%d]@%d for %r for good: %r",
            self.route.name,
            record.kind,
            inbound.topic,
            inbound.partition,
            inbound.offset,
            record.topic,
            exc,
        )
        if record.kind == "result" and is_too_large(exc) and not dead_lettered:
            self.enriched -= 1
            size = record_bytes(inbound.key, record.value, record.headers)
            return [self._dead_letter(prepared, EnrichedTooLarge(size, self._max_bytes))]
        self.failure = (
            f"route {self.route.name}: the broker refused a {record.kind} record for "
            f"{record.topic!r} for good ({error_name(exc)}): the route's sink and dead-letter "
            "topic must take its records (check their max.message.bytes against "
            "KINFER_MAX_ANSWER_BYTES, and the ACLs)"
        )
        log.error("%s", self.failure)
        raise WorkerUnhealthy(self.failure)
