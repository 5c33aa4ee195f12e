"""At-least-once: a message is committed only after its answer was acknowledged by the broker.

Real broker, real Faust app and consumer group; only the model (irrelevant here) is a fake, and
the publisher is made to fail on purpose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.batch_model import UnpreparedModel
from streams.contract import Headers
from streams.publisher import FaustPublisher
from tests.support.answers import AnswerReader
from tests.support.inprocess import fresh_settings, running_app

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


class FakeRunner(UnpreparedModel):
    name = "minilm"
    version = "fake-1"
    output_dim = 2

    async def infer_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
        return np.ones((len(texts), 2), np.float32), {"compute_ms": 0.1}

    def close(self) -> None:
        pass


class BreakablePublisher(FaustPublisher):
    """The real publisher, failing every attempt while ``broken`` is set."""

    broken = True
    attempts = 0

    async def publish(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers
    ) -> Awaitable[object]:
        BreakablePublisher.attempts += 1
        if BreakablePublisher.broken:
            raise ConnectionError("injected publish failure")
        return await super().publish(topic, key, value, headers)


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def wait_for(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def test_batch_whose_publish_fails_is_not_committed(
    broker: Any, unique_name: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = await fresh_settings(broker.bootstrap, unique_name, partitions=1)
    tp = TopicPartition(settings.request_topic, 0)
    async with running_app(
        settings, FakeRunner(), monkeypatch, publisher=BreakablePublisher
    ) as app:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        for i in range(5):
            value = orjson.dumps({"id": f"r{i}", "model": "minilm", "inputs": ["x"]})
            await producer.send_and_wait(settings.request_topic, value)
        await producer.stop()

        await wait_for(lambda: _async(BreakablePublisher.attempts >= 4), 30)
        await asyncio.sleep(3 * app.conf.broker_commit_interval)  # several commit rounds
        assert await committed(broker.bootstrap, settings.app_id, tp) in (None, 0)

        async with AnswerReader(
            broker.bootstrap, settings.response_topic, from_beginning=True
        ) as reader:
            BreakablePublisher.broken = False
            answers = await reader.collect({f"r{i}" for i in range(5)}, timeout_s=30)
        assert all(a["outputs"] == [[1.0, 1.0]] for a in answers.values())

        async def all_committed() -> bool:
            return await committed(broker.bootstrap, settings.app_id, tp) == 5

        await wait_for(all_committed, 30)


async def _async(value: bool) -> bool:
    return value
