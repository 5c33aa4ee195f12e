"""The gateway's one Kafka request/reply client, started in the background and restarted.

Every infer call of the gateway, over REST or gRPC, goes through one
`streams.client.InferenceClient`: one producer for the requests, one group-less reader of the
reply topic. `KafkaLink` creates the topics if they are missing (the workers' own, and the
reply topic, with the workers' partition count), starts the client, and while it cannot
(a broker that is down or not yet up) retries with a growing pause, up to 5 s. The gateway is
ready only while the client is started. A client whose reader broke is closed and started
again, and so is a client whose topics the broker lost (a broker that restarted without its
storage, like the embedded Tansu: `streams.topic_watch`): the restart creates them again and
reads the new reply topic from its end. A TLS or SASL configuration that cannot work
(`streams.security.SecurityError`) is not retried: `failed` is set, and the server stops with
that error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from streams.admin import ensure_topics
from streams.client import InferenceClient
from streams.gateway.errors import NotReady
from streams.security import KafkaSecurity, SecurityError
from streams.settings import Settings
from streams.topic_watch import watch_missing_topics
from streams.topics import declared_topics

__all__ = ["KafkaLink", "TopicsLost"]

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.5
LAST_RETRY_S = 5.0


class TopicsLost(Exception):
    """The broker no longer lists topics the gateway's client reads or writes."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(f"the broker lost the topics {', '.join(missing)} (restarted?)")


class KafkaLink:
    """The InferenceClient of the gateway, (re)started in a task of its own."""

    def __init__(self, settings: Settings, security: KafkaSecurity) -> None:
        self.settings = settings
        self.security = security
        self._client: InferenceClient | None = None
        self._broken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: set when the link gave up for good (a SecurityError); the error is `fatal`
        self.failed = asyncio.Event()
        self.fatal: BaseException | None = None

    @property
    def ready(self) -> bool:
        """Whether requests can be sent and their answers read now."""
        return self._client is not None and not self._broken.is_set()

    def client(self) -> InferenceClient:
        """The started client, or NotReady."""
        if self._client is None or self._broken.is_set():
            raise NotReady(
                f"the gateway is not connected to Kafka at {self.settings.bootstrap_servers} "
                "(yet); retry shortly"
            )
        return self._client

    def broken(self, reason: BaseException) -> None:
        """Report that the client failed in a way only a restart mends (its reader stopped)."""
        if not self._broken.is_set():
            log.warning("Kafka client of the gateway failed (%r): restarting it", reason)
            self._broken.set()

    async def _lost(self, missing: list[str]) -> None:
        self.broken(TopicsLost(missing))

    def start(self) -> None:
        """Start connecting in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kinfer-gateway-kafka")

    async def stop(self) -> None:
        """Close the client (calls still waiting get cancelled) and stop reconnecting."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        settings = self.settings
        topics = {**declared_topics(settings), settings.gateway_reply_topic: settings.partitions}
        pause = FIRST_RETRY_S
        while True:
            try:
                await ensure_topics(
                    settings.bootstrap_servers,
                    topics,
                    security=self.security,
                    replication_factor=settings.replication_factor,
                )
                async with InferenceClient(
                    settings.bootstrap_servers,
                    settings.request_topic,
                    settings.gateway_reply_topic,
                    security=self.security,
                ) as client:
                    self._broken.clear()
                    self._client = client
                    pause = FIRST_RETRY_S
                    log.info(
                        "gateway connected to Kafka at %s: requests to %s, answers on %s",
                        settings.bootstrap_servers,
                        settings.request_topic,
                        settings.gateway_reply_topic,
                    )
                    # only the two it uses: a principal may not be allowed to see the others
                    used = [settings.request_topic, settings.gateway_reply_topic]
                    watch = asyncio.create_task(
                        watch_missing_topics(
                            settings.bootstrap_servers, self.security, used, self._lost
                        ),
                        name="kinfer-gateway-topic-watch",
                    )
                    try:
                        await self._broken.wait()
                    finally:
                        watch.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await watch
            except asyncio.CancelledError:
                raise
            except SecurityError as exc:
                log.error("gateway cannot connect to Kafka: %s", exc)
                self.fatal = exc
                self.failed.set()
                return
            except Exception as exc:  # a broker that is down or not up yet: retried
                log.warning(
                    "gateway cannot reach Kafka at %s (%s); retrying in %.1f s",
                    settings.bootstrap_servers,
                    exc,
                    pause,
                )
            finally:
                self._client = None
            await asyncio.sleep(pause)
            pause = min(pause * 2, LAST_RETRY_S)
