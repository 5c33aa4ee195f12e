"""The spine end to end: aiokafka producer -> Tansu -> kinfer worker -> Tansu -> consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker, ExternalBroker
from tests.support.answers import AnswerReader
from tests.support.topics import create_worker_topics
from tests.support.worker import TEST_SETTINGS, WorkerProcess

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

SUBJECTS = ["Kafka", "a jitted encoder", "the night train", "Faust", "东京的天气", "la mer"]
VERBS = ["batches", "answers", "drifts past", "embeds", "forgets", "keeps"]


def sentence(i: int) -> str:
    return f"{SUBJECTS[i % 6]} {VERBS[(i // 6) % 6]} request number {i % 97}."


@pytest.fixture(scope="module")
def topics(broker: EmbeddedBroker | ExternalBroker) -> dict[str, str]:
    return asyncio.run(create_worker_topics(broker.bootstrap, "w"))


@pytest.fixture(scope="module")
def worker(
    broker: EmbeddedBroker | ExternalBroker, topics: dict[str, str]
) -> Iterator[WorkerProcess]:
    with WorkerProcess(broker.bootstrap, topics) as process:
        yield process


@pytest.fixture(scope="module")
def direct_model() -> Callable[[list[str]], np.ndarray]:
    from models import registry
    from models.runner import RunnerConfig

    runner = registry.load(
        "minilm",
        config=RunnerConfig(
            batch_buckets=tuple(int(b) for b in TEST_SETTINGS["KINFER_BATCH_BUCKETS"].split(",")),
            seq_buckets=tuple(int(s) for s in TEST_SETTINGS["KINFER_SEQ_BUCKETS"].split(",")),
        ),
    )
    return lambda texts: runner.infer(texts)[0]


async def produce(
    bootstrap: str, topic: str, values: list[bytes], headers: list[tuple[str, bytes]] | None = None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=f"k{i}".encode(), headers=headers or [])
            for i, value in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def request(request_id: str, inputs: list[str]) -> bytes:
    return orjson.dumps({"id": request_id, "model": "minilm", "inputs": inputs})


async def test_a_thousand_requests_get_a_thousand_correct_answers(
    broker: Any,
    topics: dict[str, str],
    worker: WorkerProcess,
    direct_model: Callable[[list[str]], np.ndarray],
) -> None:
    texts = {f"req-{i}": sentence(i) for i in range(1000)}
    async with AnswerReader(broker.bootstrap, topics["response_topic"]) as reader:
        await produce(
            broker.bootstrap,
            topics["request_topic"],
            [request(rid, [text]) for rid, text in texts.items()],
        )
        answers = await reader.collect(set(texts), timeout_s=240)
    assert set(answers) == set(texts)
    unique = sorted(set(texts.values()))
    expected = dict(zip(unique, direct_model(unique), strict=True))
    for rid, answer in answers.items():
        assert "error" not in answer, answer
        assert answer["model"] == "minilm"
        [vector] = answer["outputs"]
        np.testing.assert_allclose(vector, expected[texts[rid]], atol=2e-5)
        assert answer["timing"]["compute_ms"] > 0


async def test_malformed_message_gets_invalid_json_and_worker_goes_on(
    broker: Any,
    topics: dict[str, str],
    worker: WorkerProcess,
) -> None:
    async with AnswerReader(broker.bootstrap, topics["response_topic"]) as reader:
        await produce(
            broker.bootstrap,
            topics["request_topic"],
            [b'{"id": "broken", "inputs": [', request("after", ["still here"])],
        )
        answers = await reader.collect({None, "after"}, timeout_s=60)
    assert answers[None]["error"]["code"] == "INVALID_JSON"
    assert len(answers["after"]["outputs"][0]) == 384


async def test_reply_to_header_routes_the_answer_and_headers_are_echoed(
    broker: Any,
    topics: dict[str, str],
    worker: WorkerProcess,
    unique_name: Any,
) -> None:
    reply_topic = "kinfer.replies." + unique_name("r")  # the default KINFER_REPLY_TO_PATTERN
    await ensure_topics(broker.bootstrap, {reply_topic: 1})
    async with AnswerReader(broker.bootstrap, reply_topic) as reader:
        await produce(
            broker.bootstrap,
            topics["request_topic"],
            [request("routed", ["hello"])],
            headers=[
                ("reply-to", reply_topic.encode()),
                ("x-request-id", b"trace-7"),
                ("x-tenant", b"acme"),
            ],
        )
        answers = await reader.collect({"routed"}, timeout_s=60)
    record = reader.records["routed"]
    assert record.key == b"k0"
    headers = dict(record.headers)
    assert headers["x-request-id"] == b"trace-7"
    assert headers["x-tenant"] == b"acme"
    assert len(answers["routed"]["outputs"]) == 1
