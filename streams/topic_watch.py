"""Broker restart: recreate the worker's topics when the broker lost them, then resubscribe.

A broker that lost its storage (the embedded Tansu keeps nothing across a restart) comes back
without the worker's topics. Every ``TOPIC_WATCH_INTERVAL_S`` the watcher lists the topics; when a
declared one is gone it creates every declared topic again and forces a metadata refresh of the
consumer, so it resubscribes and the group gets its partitions back without a restart.
`watch_missing_topics` is the watch alone: the gateway restarts its Kafka client with it
(`streams.gateway.kafka_link`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from streams.admin import ensure_topics
from streams.security import KafkaSecurity
from streams.settings import Settings

__all__ = [
    "METADATA_REFRESH_TIMEOUT_S",
    "TOPIC_WATCH_INTERVAL_S",
    "refresh_consumer_metadata",
    "watch_missing_topics",
    "watch_topics",
]

log = logging.getLogger(__name__)

#: How often the worker checks that its request topic still exists (broker restart).
TOPIC_WATCH_INTERVAL_S = 2.0
#: Bound on the consumer metadata refresh after topics were re-created.
METADATA_REFRESH_TIMEOUT_S = 10.0


async def watch_topics(
    settings: Settings,
    security: KafkaSecurity,
    declared: Mapping[str, int],
    consumer: Callable[[], Any],
) -> None:
    """The worker's watch: recreate the declared topics when the broker lost them, then
    resubscribe Faust's ``consumer()``."""

    async def recreate(missing: list[str]) -> None:
        # Every declared topic, not just the request topic: a consumer's metadata request may
        # auto-create that one alone on a broker that allows it.
        log.warning("topics %s are gone (broker restarted?): creating them again", missing)
        await ensure_topics(
            settings.bootstrap_servers,
            declared,
            security=security,
            replication_factor=settings.replication_factor,
        )
        await refresh_consumer_metadata(consumer())

    await watch_missing_topics(settings.bootstrap_servers, security, declared, recreate)


async def watch_missing_topics(
    bootstrap_servers: str,
    security: KafkaSecurity,
    topics: Collection[str],
    on_missing: Callable[[list[str]], Awaitable[None]],
    interval_s: float = TOPIC_WATCH_INTERVAL_S,
) -> None:
    """Every ``interval_s``, call ``on_missing(missing)`` if any of ``topics`` is not listed.

    A broker that cannot be reached is not a loss: the watch reconnects and looks again. One
    admin connection serves every check; it is replaced only after an error. Runs until
    cancelled.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    admin: AIOKafkaAdminClient | None = None
    try:
        while True:
            await asyncio.sleep(interval_s)
            try:
                if admin is None:
                    admin = AIOKafkaAdminClient(
                        bootstrap_servers=bootstrap_servers,
                        request_timeout_ms=5000,
                        **security.aiokafka(),
                    )
                    async with asyncio.timeout(10):
                        await admin.start()
                async with asyncio.timeout(10):
                    listed = await admin.list_topics()
                missing = sorted(set(topics) - set(listed))
                if missing:
                    await on_missing(missing)
            except Exception as exc:  # broker down: reconnect and try again later
                log.info("topic watch: %r", exc)
                if admin is not None:
                    with contextlib.suppress(Exception):
                        await admin.close()
                    admin = None
    finally:
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()


async def refresh_consumer_metadata(consumer: Any) -> None:
    """Nudge Faust's ``consumer``: new metadata shows the recreated topic, triggering a rejoin.

    Its aiokafka consumer lives in a thread with its own event loop: its client is
    only touched there (``call_thread``), never from this loop.
    """
    thread = getattr(consumer, "_thread", None)
    aiokafka_consumer = getattr(thread, "_consumer", None)
    client = getattr(aiokafka_consumer, "_client", None)
    if thread is None or client is None:
        return

    async def refresh() -> None:
        await client.force_metadata_update()

    async with asyncio.timeout(METADATA_REFRESH_TIMEOUT_S):
        await thread.call_thread(refresh)
