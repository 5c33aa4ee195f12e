"""Publishing a message's records until each, or what stands in for it, is delivered.

Shared by the request pipeline (`streams.pipeline`) and the enrichment routes
(`streams.enrich.pipeline`): one retry loop, one rule for what is refused for good.

- A retriable failure (connection, leader change, timeout; anything that is not a Kafka error)
  is retried with exponential backoff, never dropped: the caller's message stays unacked, so
  uncommitted, until its records are delivered.
- A permanent refusal (:func:`streams.publisher.is_permanent`: record too large, a topic that
  does not exist, not authorised) is never retried: the caller's ``substitute`` says what to
  publish instead (an error answer, a dead letter), or raises
  :class:`~streams.errors.WorkerUnhealthy` when nothing is left to try.
- The caller's own topics (those it creates and the worker's topic watch re-creates after a
  broker restart) are waited for when they are missing, not given up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection

from streams.publisher import is_permanent, is_unknown_topic
from streams.records import Outbound

__all__ = ["Deliverer", "Send", "Substitute"]

log = logging.getLogger(__name__)

#: Hands one record (and the message's key) to the producer; the awaitable it returns resolves
#: once the broker acknowledged the record (and raises if it did not).
Send = Callable[[Outbound, bytes | None], Awaitable[Awaitable[object]]]
#: What to publish in place of a record refused for good: (record, error, whether a dead
#: letter was already among the message's records) -> the records instead (maybe none).
Substitute = Callable[[Outbound, Exception, bool], list[Outbound]]


class Deliverer:
    """Publishes a message's records with retries; see the module docstring."""

    def __init__(
        self,
        send: Send,
        *,
        own_topics: Collection[str],
        retry_backoff_s: tuple[float, float] = (0.1, 5.0),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._send = send
        self._own_topics = frozenset(own_topics)
        self._backoff = retry_backoff_s
        self._sleep = sleep

    async def deliver(
        self, key: bytes | None, records: list[Outbound], substitute: Substitute
    ) -> None:
        """Publish ``records`` until each, or what ``substitute`` gives for it, is delivered.

        The records are sent together, then their deliveries awaited; what failed is sent again
        (after a backoff) or replaced. Returns only once nothing is left pending.
        """
        dead_lettered = any(record.kind == "dead-letter" for record in records)
        pending = records
        attempt = 0
        while pending:
            failed: list[tuple[Outbound, Exception]] = []
            sent: list[tuple[Outbound, Awaitable[object]]] = []
            for record in pending:
                try:
                    delivery = await self._send(record, key)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failed.append((record, exc))
                else:
                    sent.append((record, delivery))
            for record, delivery in sent:
                try:
                    await delivery
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failed.append((record, exc))
            pending = []
            retried: tuple[Exception, str] | None = None
            for record, error in failed:
                if self.refused_for_good(record, error):
                    instead = substitute(record, error, dead_lettered)
                    dead_lettered = dead_lettered or any(r.kind == "dead-letter" for r in instead)
                    pending += instead
                else:
                    pending.append(record)
                    retried = (error, record.topic)
            if retried is not None:
                attempt += 1
                await self._backoff_after(retried[0], attempt, retried[1])

    def refused_for_good(self, record: Outbound, exc: Exception) -> bool:
        """Whether retrying ``record`` cannot help (an own topic that is missing can come back)."""
        if record.topic in self._own_topics and is_unknown_topic(exc):
            return False
        return is_permanent(exc)

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
