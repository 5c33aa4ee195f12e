"""The topics of enrichment routes: the source must exist; the sink and dead-letter topic are
created.

A sink is created with as many partitions as its source (the largest source's, when several
routes share a sink), so source partition ``p`` maps to sink partition ``p``; a dead-letter
topic has one partition, as kinfer's own. A sink that already exists is left as it is (with
fewer partitions than its source, partition ``p`` goes to ``p`` modulo its count, logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient

from streams.admin import ensure_topics, wait_for_broker
from streams.enrich.route import EnrichRoute, RouteError
from streams.security import PLAINTEXT, KafkaSecurity

__all__ = ["RouteTopics", "SourceMissing", "check_sources", "prepare_route_topics"]

log = logging.getLogger(__name__)

_TIMEOUT_S = 15.0


class SourceMissing(RouteError):
    """A route's source topic does not exist (kinfer reads it and never creates it)."""

    def __init__(self, missing: Sequence[EnrichRoute], bootstrap: str) -> None:
        names = ", ".join(sorted({route.source for route in missing}))
        routes = "; ".join(route.name for route in missing)
        super().__init__(
            f"source topic(s) {names} not found on {bootstrap} (route {routes}): kinfer reads "
            "a route's source but never creates it; create it, or check the name"
        )
        self.missing = tuple(missing)


@dataclass(frozen=True, slots=True)
class RouteTopics:
    """What the routes' topics are: partitions of every topic the worker owns for them, and of
    each sink as it is (the pipelines place records by it)."""

    #: sink and dead-letter topic -> partitions wanted (for the worker's topic watch)
    owned: dict[str, int]
    #: sink -> its partition count on the broker
    sink_partitions: dict[str, int]


async def check_sources(
    routes: Sequence[EnrichRoute],
    bootstrap: str,
    *,
    security: KafkaSecurity = PLAINTEXT,
    timeout_s: float = _TIMEOUT_S,
) -> dict[str, int]:
    """Source topic -> partitions; raises SourceMissing naming every source that is missing.

    Existence is read from the cluster's topic list, never by asking for the topic itself (a
    broker with auto.create.topics.enable would create it).
    """
    await wait_for_broker(bootstrap, timeout_s, security=security)
    sources = sorted({route.source for route in routes})
    partitions = await _partitions(bootstrap, sources, security, timeout_s)
    missing = [route for route in routes if route.source not in partitions]
    if missing:
        raise SourceMissing(missing, bootstrap)
    return partitions


async def prepare_route_topics(
    routes: Sequence[EnrichRoute],
    bootstrap: str,
    *,
    security: KafkaSecurity = PLAINTEXT,
    replication_factor: int | None = None,
    timeout_s: float = _TIMEOUT_S,
) -> RouteTopics:
    """Check the sources, create the sinks and dead-letter topics that are missing."""
    if not routes:
        return RouteTopics({}, {})
    sources = await check_sources(routes, bootstrap, security=security, timeout_s=timeout_s)
    owned: dict[str, int] = {}
    for route in routes:
        owned[route.sink] = max(owned.get(route.sink, 1), sources[route.source])
        owned.setdefault(route.dead_letter_topic, 1)
    await ensure_topics(
        bootstrap,
        owned,
        security=security,
        replication_factor=replication_factor,
        timeout_s=timeout_s,
    )
    sinks = sorted({route.sink for route in routes})
    found = await _partitions(bootstrap, sinks, security, timeout_s)
    for route in routes:
        have, source = found.get(route.sink, 0), sources[route.source]
        if 0 < have < source:
            log.warning(
                "route %s: the sink has %d partitions, its source %d: source partition p goes "
                "to sink partition p mod %d",
                route.name,
                have,
                source,
                have,
            )
    return RouteTopics(owned, {sink: found.get(sink, owned[sink]) for sink in sinks})


async def _partitions(
    bootstrap: str, topics: Sequence[str], security: KafkaSecurity, timeout_s: float
) -> dict[str, int]:
    """Topic -> partition count, for those of ``topics`` that exist."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout_s * 1000),
        **security.aiokafka(),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            existing = set(await admin.list_topics())
            wanted = [topic for topic in topics if topic in existing]
            if not wanted:
                return {}
            described = await admin.describe_topics(wanted)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return {
        d["topic"]: len(d["partitions"])
        for d in described
        if d["error_code"] == 0 and d["partitions"]
    }
