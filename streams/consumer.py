"""Faust's aiokafka consumer, with a fetch long-poll kinfer can set.

Faust 0.15 builds its worker consumer with ``fetch_max_wait_ms=1500`` hard-coded. A broker that
does not answer a pending fetch as soon as data arrives (Tansu, here) then adds up to that much
latency to every request. kinfer sets it from ``KINFER_FETCH_MAX_WAIT_MS`` instead.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as FaustAIOKafkaConsumer


def consumer_class(fetch_max_wait_ms: int) -> type[FaustAIOKafkaConsumer]:
    """A Faust Consumer class whose aiokafka consumer long-polls ``fetch_max_wait_ms``."""

    class _Thread(AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # read by AIOKafkaConsumer.start() when it builds its Fetcher
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class KinferConsumer(FaustAIOKafkaConsumer):
        def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
            return _Thread(self, loop=self.loop, beacon=self.beacon)

    return KinferConsumer
