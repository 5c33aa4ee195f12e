"""The agent: consume -> decode -> micro-batch -> run -> publish -> ack.

The stream runs with acks off (``stream.noack()``): Faust's ``take()`` would ack every buffered
event in a ``finally`` even when answering failed. Each event is acked only after
:meth:`RequestPipeline.handle` returns, that is after its answer (and any dead letter) was
acknowledged by the broker, so a crash at any point leaves the request uncommitted and it is
delivered again. Messages are decoded in consumption order, handled concurrently (the batcher
gathers them across partitions) and their answers published in the order of each partition.

What the agent holds is bounded in inputs and in estimated tokens (``KINFER_MAX_IN_FLIGHT``,
``KINFER_MAX_IN_FLIGHT_TOKENS``). Once the worker is unhealthy (a systemic failure, see
:meth:`KinferApp.failure`) the agent stops taking messages: nothing more is answered or acked,
/live fails, and what the worker took is delivered again to the worker that replaces it.

The enrichment routes' agents (`streams.enrich.agents`) run the same loop, :func:`serve_events`,
with the same limit, tasks and rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from streams.contract import normalise_headers
from streams.errors import WorkerUnhealthy
from streams.records import Inbound
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.app import KinferApp

log = logging.getLogger(__name__)


class Weighed(Protocol):
    """A prepared message: what it holds of the in-flight limit."""

    @property
    def weight(self) -> int: ...

    @property
    def tokens(self) -> int: ...


P = TypeVar("P", bound=Weighed)


class EventPipeline(Protocol[P]):
    """What an agent drives: `streams.pipeline.RequestPipeline`, an enrichment route's pipeline.

    ``prepare`` is called in consumption order; ``handle`` returns once the message's records
    are acknowledged by the broker (then it is acked) and raises WorkerUnhealthy when the
    worker cannot serve; ``abandon`` gives up a prepared message, left uncommitted.
    """

    def prepare(self, inbound: Inbound) -> P: ...

    def abandon(self, prepared: P) -> None: ...

    async def handle(self, prepared: P) -> None: ...


def inbound_from_event(event: Any) -> Inbound:
    """The pipeline's view of a Faust event (its raw Kafka record)."""
    message = event.message
    return Inbound(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=normalise_headers(message.headers),
        timestamp=float(message.timestamp or 0.0),
    )


def register_agent(app: KinferApp, settings: Settings) -> None:
    """Attach the serving agent for ``settings.request_topic`` to ``app``."""
    topic = app.topic(
        settings.request_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    @app.agent(topic, name="kinfer.serve")
    async def serve(stream: Any) -> None:
        await serve_events(app, stream, lambda: app.pipeline)


async def serve_events(
    app: KinferApp, stream: Any, pipeline_of: Callable[[], EventPipeline[Any] | None]
) -> None:
    """Drive ``stream`` (acks off) through a pipeline: one task per message, acked once handled.

    ``pipeline_of`` gives the pipeline, built in the app's ``on_start`` (before the consumer
    starts). The in-flight limit, the handler tasks (waited for on a stop or a rebalance) and
    the stop, failure and staleness rules are the app's, shared by every agent.
    """
    manual = stream.noack()
    tasks = app.handler_tasks
    async for event in manual.events():
        if app.stopping:  # a graceful stop began: leave it uncommitted
            continue
        if app.failure() is not None:
            await _stop_taking(app)
        pipeline = pipeline_of()
        assert pipeline is not None, "the pipeline is built before the consumer starts"
        prepared = pipeline.prepare(inbound_from_event(event))
        await app.in_flight.acquire(prepared.weight, prepared.tokens)
        if app.stopping or app.failure() is not None or _stale(app, event):
            # leave it uncommitted: a stop or a failure began, or a rebalance since it was
            # fetched (Faust seeks back to the committed offsets, so it comes again)
            app.in_flight.release(prepared.weight, prepared.tokens)
            pipeline.abandon(prepared)
            continue
        task = asyncio.create_task(_answer_then_ack(app, manual, event, prepared, pipeline))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def _stale(app: KinferApp, event: Any) -> bool:
    """Whether ``event`` was fetched before the latest rebalance (as Faust's streams judge)."""
    generation = getattr(event.message, "generation_id", None)
    return generation is not None and generation != app.consumer_generation_id


async def _stop_taking(app: KinferApp) -> None:
    """Take nothing more, ever: the stream's buffer fills and Faust stops fetching."""
    log.error("the worker is unhealthy (%s): it stops taking requests", app.failure())
    await asyncio.get_running_loop().create_future()  # until the worker is stopped


async def _answer_then_ack(
    app: KinferApp,
    stream: Any,
    event: Any,
    prepared: Weighed,
    pipeline: EventPipeline[Any] | None = None,
) -> None:
    offset = event.message.offset
    try:
        handler: EventPipeline[Any] | None = pipeline if pipeline is not None else app.pipeline
        assert handler is not None
        await handler.handle(prepared)
        await stream.ack(event)
    except asyncio.CancelledError:
        log.debug("stopped before answering offset %d: it stays uncommitted", offset)
        raise
    except WorkerUnhealthy:
        log.debug("unhealthy: offset %d is left unanswered and uncommitted", offset)
    except Exception as exc:  # handle() never raises by design: a bug of ours
        log.exception("answering offset %d failed: not acked", offset)
        # Unacked, it would hold its partition's commits until the next rebalance: declare the
        # worker unhealthy instead, so it is replaced and the request answered again.
        app.fail(f"answering a request raised {exc!r}")
    finally:
        app.in_flight.release(prepared.weight, prepared.tokens)
