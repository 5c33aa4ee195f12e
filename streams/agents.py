"""The agent: consume -> decode -> micro-batch -> run -> publish -> ack.

The stream runs with acks off (``stream.noack()``): Faust's ``take()`` would ack every buffered
event in a ``finally`` even when answering failed. Each event is acked only after
:meth:`RequestPipeline.handle` returns, that is after its answer (and any dead letter) was
acknowledged by the broker, so a crash at any point leaves the request uncommitted and it is
delivered again. Messages are decoded in consumption order, handled concurrently (the batcher
gathers them across partitions) and their answers published in the order of each partition.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from streams.contract import normalise_headers
from streams.pipeline import Inbound, Prepared
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.app import KinferApp

log = logging.getLogger(__name__)


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
        manual = stream.noack()
        tasks = app.handler_tasks
        async for event in manual.events():
            if app.stopping:  # a graceful stop began: leave it uncommitted
                continue
            pipeline = app.pipeline
            assert pipeline is not None, "the pipeline is built before the consumer starts"
            prepared = pipeline.prepare(inbound_from_event(event))
            await app.in_flight.acquire(prepared.weight)
            if app.stopping:  # a graceful stop began: leave it uncommitted
                app.in_flight.release(prepared.weight)
                continue
            task = asyncio.create_task(_answer_then_ack(app, manual, event, prepared))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


async def _answer_then_ack(app: KinferApp, stream: Any, event: Any, prepared: Prepared) -> None:
    try:
        assert app.pipeline is not None
        await app.pipeline.handle(prepared)
        await stream.ack(event)
    except asyncio.CancelledError:
        log.debug("stopped before answering offset %d: it stays uncommitted", event.message.offset)
        raise
    except Exception:  # handle() never raises by design; if it does, do not ack
        log.exception("answering offset %d failed: not acked", event.message.offset)
    finally:
        app.in_flight.release(prepared.weight)
