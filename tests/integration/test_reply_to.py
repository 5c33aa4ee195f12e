"""The reply-to allow-list against a real worker and broker: nothing written where it may not be."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker, ExternalBroker
from streams.records import DLQ_CODE_HEADER
from tests.support.answers import AnswerReader
from tests.support.topics import create_worker_topics
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def topics(broker: EmbeddedBroker | ExternalBroker) -> dict[str, str]:
    names = asyncio.run(create_worker_topics(broker.bootstrap, "rt", partitions=2))
    names["dlq_topic"] = names["request_topic"] + ".dlq"
    return names


@pytest.fixture(scope="module")
def worker(
    broker: EmbeddedBroker | ExternalBroker, topics: dict[str, str]
) -> Iterator[WorkerProcess]:
    with WorkerProcess(broker.bootstrap, topics) as process:  # the default reply-to pattern
        yield process


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        totals = {}
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic)
            while partitions is None:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
            totals[topic] = sum(ends.values())
        return totals
    finally:
        await consumer.stop()


async def send(bootstrap: str, topic: str, requests: list[tuple[str, str]]) -> None:
    """Produce requests (id, reply-to)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for request_id, reply_to in requests:
            value = orjson.dumps({"id": request_id, "model": "minilm", "inputs": ["where to?"]})
            headers = [("reply-to", reply_to.encode()), ("x-request-id", request_id.encode())]
            await producer.send_and_wait(topic, value, key=request_id.encode(), headers=headers)
    finally:
        await producer.stop()


async def test_refused_reply_to_is_answered_on_the_response_topic_and_dead_lettered(
    broker: Any, topics: dict[str, str], worker: WorkerProcess, unique_name: Any
) -> None:
    allowed = "kinfer.replies." + unique_name("r")
    foreign = unique_name("other-app-orders")
    await ensure_topics(broker.bootstrap, {allowed: 1, foreign: 1})
    refused = {
        "to-offsets": "__consumer_offsets",
        "to-internal": "__kinfer_anything",
        "to-requests": topics["request_topic"],
        "to-dlq": topics["dlq_topic"],
        "to-foreign": foreign,
    }
    watched = [foreign, topics["request_topic"], topics["dlq_topic"], allowed]
    before = await end_offsets(broker.bootstrap, watched)
    async with (
        AnswerReader(broker.bootstrap, topics["response_topic"]) as responses,
        AnswerReader(broker.bootstrap, allowed) as replies,
        AnswerReader(broker.bootstrap, topics["dlq_topic"]) as dead,
    ):
        await send(
            broker.bootstrap,
            topics["request_topic"],
            [*refused.items(), ("to-allowed", allowed)],
        )
        errors = await responses.collect(set(refused), timeout_s=90)
        served = await replies.collect({"to-allowed"}, timeout_s=60)
        # dead letters are the requests unchanged: read their ids back from the values
        deadline = asyncio.get_running_loop().time() + 30
        while len(dead.answers) < len(refused):
            assert asyncio.get_running_loop().time() < deadline, "dead letters missing"
            await dead.poll()
        await responses.poll(1.0)
    for request_id, topic in refused.items():
        error = errors[request_id]["error"]
        assert error["code"] == "INVALID_REQUEST", errors[request_id]
        assert topic in error["message"]
    assert set(dead.answers) == set(refused)
    assert all(
        dict(record.headers)[DLQ_CODE_HEADER] == b"INVALID_REQUEST"
        for record in dead.records.values()
    )
    assert len(served["to-allowed"]["outputs"][0]) == 384
    assert "to-allowed" not in responses.answers, "an allowed reply-to is followed"
    after = await end_offsets(broker.bootstrap, watched)
    assert after[foreign] == before[foreign], "nothing is written to another app's topic"
    assert after[topics["request_topic"]] == before[topics["request_topic"]] + len(refused) + 1, (
        "the request topic holds the requests and nothing else"
    )
    assert after[topics["dlq_topic"]] == before[topics["dlq_topic"]] + len(refused), (
        "the dead-letter topic holds one dead letter per refused request, no answer"
    )
    assert after[allowed] == before[allowed] + 1
    assert worker.proc is not None
    assert worker.proc.poll() is None
