"""The routes in the worker: one Faust agent per route, and the pipelines they drive.

Each route's agent reads its source with acks off and runs `streams.agents.serve_events`, the
loop of the request agent: the same in-flight limit (shared with requests), the same handler
tasks (a graceful stop or a rebalance waits for them), the same stop, failure and staleness
rules. An event's offset is acked once its enriched record, or its dead letter, is acknowledged
by the broker; an event never acked holds its partition's commits, so nothing is skipped.

The agents read in the worker's consumer group (``KINFER_APP_ID``). A new route starts at the
source's earliest offset (the group has no commit for it yet), as a new request topic would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from streams.agents import serve_events
from streams.enrich.pipeline import EnrichPipeline
from streams.enrich.preflight import check_models
from streams.enrich.route import EnrichRoute
from streams.enrich.topics import prepare_route_topics
from streams.errors import UnknownModel
from streams.model_manager import request_limits
from streams.publisher import FaustPublisher

if TYPE_CHECKING:
    from streams.app import KinferApp

__all__ = ["agent_name", "register_enrich_agents", "start_routes"]

log = logging.getLogger(__name__)

#: How often a route waiting for its model version looks again.
_MODEL_POLL_S = 0.5


def agent_name(route: EnrichRoute) -> str:
    """The Faust agent's name for ``route``."""
    return f"kinfer.enrich.{route.source}.{route.sink}"


def register_enrich_agents(app: KinferApp, routes: Sequence[EnrichRoute]) -> None:
    """Attach one agent per route to ``app`` (their pipelines are built by `start_routes`)."""
    for route in routes:
        topic = app.topic(
            route.source,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        app.agent(topic, name=agent_name(route))(_enrich_agent(app, route))


def _enrich_agent(app: KinferApp, route: EnrichRoute) -> Any:
    async def enrich(stream: Any) -> None:
        await _until_served(app, route)
        await serve_events(app, stream, lambda: app.enrichers.get(route.name))

    return enrich


async def _until_served(app: KinferApp, route: EnrichRoute) -> None:
    """Return once the route's model (its pinned version) is served; until then its events
    wait in Kafka. A worker is ready once each model's default version is warm, so a pinned
    other version may still be loading. One that failed to load makes the worker unhealthy:
    dead-lettering every event for it would hide the failure."""
    waited = False
    while True:
        try:
            app.models.resolve(route.model, route.version)
        except UnknownModel as exc:
            known = [
                status
                for status in app.models.describe()
                if status.name == route.model and route.version in (None, status.version)
            ]
            if known and all(status.state == "failed" for status in known):
                reasons = "; ".join(f"{s.name} {s.version}: {s.reason}" for s in known)
                app.fail(f"route {route.name}: its model failed to load ({reasons})")
                return
            if not waited:
                log.info("route %s waits for its model: %s", route.name, exc.message)
                waited = True
            await asyncio.sleep(_MODEL_POLL_S)
        else:
            if waited:
                log.info("route %s: its model is served, the route starts", route.name)
            return


async def start_routes(app: KinferApp, routes: Sequence[EnrichRoute]) -> dict[str, int]:
    """Check the routes' models and topics, create their sinks and dead-letter topics, and
    build their pipelines into ``app.enrichers``.

    Returns the topics the worker owns for them (name -> partitions), for its topic watch.
    Raises RouteError when a source is missing or a route's model is not served here.
    """
    if not routes:
        return {}
    settings = app.kinfer_settings
    check_models(settings, routes)
    topics = await prepare_route_topics(
        routes,
        settings.bootstrap_servers,
        security=app.kafka_security,
        replication_factor=settings.replication_factor,
    )
    publisher = FaustPublisher(app)
    limits = request_limits(settings)
    for route in routes:
        app.enrichers[route.name] = EnrichPipeline(
            route=route,
            models=app.models,
            publisher=publisher,
            sink_partitions=topics.sink_partitions[route.sink],
            limits=limits,
            max_record_bytes=settings.max_answer_bytes,
        )
        log.info(
            "route %s: %s version %s, text %s%s -> field %s; dead letters to %s",
            route.name,
            route.model,
            route.version or "(its default)",
            route.text,
            f", id {route.id}" if route.id else "",
            repr(route.output_field) if route.output_field else "(the model's default)",
            route.dead_letter_topic,
        )
    return topics.owned
