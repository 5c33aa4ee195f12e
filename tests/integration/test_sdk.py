"""The SDK against a real worker: 1 000 concurrent calls, typed errors, a timeout, a shared
reply topic, ``map`` with per-input errors, the blocking client and ``kinfer infer``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker, ExternalBroker
from streams.sdk import (
    DeadlineExceededError,
    InferenceClient,
    InputTooLargeError,
    InvalidRequestError,
    ReplyTimeout,
    SyncClient,
    UnknownModelError,
)
from tests.support.topics import create_worker_topics
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

Broker = EmbeddedBroker | ExternalBroker


def sentence(i: int) -> str:
    return f"customer {i % 211} asked about parcel {i} on day {i % 7}"


@pytest.fixture(scope="module")
def topics(broker: Broker) -> dict[str, str]:
    return asyncio.run(create_worker_topics(broker.bootstrap, "sdk"))


@pytest.fixture(scope="module")
def worker(broker: Broker, topics: dict[str, str]) -> Iterator[WorkerProcess]:
    with WorkerProcess(broker.bootstrap, topics) as process:
        yield process


def client(
    broker: Broker, topics: dict[str, str], reply_topic: str | None = None
) -> InferenceClient:
    return InferenceClient(
        broker.bootstrap, topics["request_topic"], reply_topic or topics["response_topic"]
    )


async def reference(sdk: InferenceClient, texts: list[str]) -> dict[str, np.ndarray]:
    """Each text's embedding from requests of 64 texts, to check one-text answers against."""
    found: dict[str, np.ndarray] = {}
    unique = sorted(set(texts))
    for start in range(0, len(unique), 64):
        chunk = unique[start : start + 64]
        found.update(zip(chunk, await sdk.predict("minilm", chunk, encoding="base64"), strict=True))
    return found


async def test_a_thousand_concurrent_calls_share_one_client(
    broker: Broker, topics: dict[str, str], worker: WorkerProcess
) -> None:
    texts = [sentence(i % 250) for i in range(1000)]  # neighbours' texts always differ
    async with client(broker, topics) as sdk:
        answers = await asyncio.wait_for(
            asyncio.gather(*(sdk.predict("minilm", [text], timeout_s=200) for text in texts)), 240
        )
        expected = await reference(sdk, texts)
    assert len(answers) == 1000
    for text, [vector] in zip(texts, answers, strict=True):
        assert len(vector) == 384
        np.testing.assert_allclose(vector, expected[text], atol=2e-5)


async def test_error_answers_raise_their_typed_exception(
    broker: Broker, topics: dict[str, str], worker: WorkerProcess
) -> None:
    async with client(broker, topics) as sdk:
        with pytest.raises(UnknownModelError, match="not served") as unknown:
            await sdk.predict("no-such-model", ["hello"])
        assert unknown.value.code == "UNKNOWN_MODEL"
        assert isinstance(unknown.value.request_id, str)
        with pytest.raises(InvalidRequestError, match="unknown fields: 'bogus'"):
            await sdk.predict("minilm", ["hello"], params={"bogus": 1})
        with pytest.raises(InputTooLargeError, match="KINFER_MAX_INPUT_CHARS"):
            await sdk.predict("minilm", ["x" * 100_001])
        with pytest.raises(DeadlineExceededError) as late:
            await sdk.predict("minilm", ["too late"], deadline_ms=0.001)
        assert late.value.retriable
        # the client goes on serving after errors
        [vector] = await sdk.predict("minilm", ["still fine"])
        assert len(vector) == 384


async def test_no_answer_in_time_raises_reply_timeout(broker: Broker) -> None:
    idle = await create_worker_topics(broker.bootstrap, "sdk-idle")  # no worker reads these
    async with InferenceClient(
        broker.bootstrap, idle["request_topic"], idle["response_topic"]
    ) as sdk:
        with pytest.raises(
            ReplyTimeout, match=r"1 answer\(s\) did not arrive within 1\.5s"
        ) as caught:
            await sdk.predict("minilm", ["anyone?"], timeout_s=1.5)
    assert len(caught.value.ids) == 1


async def test_clients_sharing_a_reply_topic_each_get_their_own_answers(
    broker: Broker, topics: dict[str, str], worker: WorkerProcess, unique_name: Any
) -> None:
    shared = "kinfer.replies." + unique_name("shared")  # allowed by the default reply-to pattern
    await ensure_topics(broker.bootstrap, {shared: 2})
    first, second = [sentence(i) for i in range(0, 100)], [sentence(i) for i in range(500, 600)]
    async with client(broker, topics, shared) as a, client(broker, topics, shared) as b:
        await _write_junk(broker.bootstrap, shared)  # another writer's records on the topic
        got_a, got_b = await asyncio.wait_for(
            asyncio.gather(
                asyncio.gather(*(a.predict("minilm", [t]) for t in first)),
                asyncio.gather(*(b.predict("minilm", [t]) for t in second)),
            ),
            120,
        )
        expected = await reference(a, first + second)
    for texts, answers in ((first, got_a), (second, got_b)):
        for text, [vector] in zip(texts, answers, strict=True):
            np.testing.assert_allclose(vector, expected[text], atol=2e-5)


async def _write_junk(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in (b"not json", b"[1, 2]", orjson.dumps({"id": "someone-else", "outputs": []})):
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def test_map_keeps_input_order_and_fails_only_the_bad_input(
    broker: Broker, topics: dict[str, str], worker: WorkerProcess
) -> None:
    texts = [sentence(i) for i in range(300)]
    texts[77] = "y" * 100_001  # over KINFER_MAX_INPUT_CHARS: its message is answered with an error

    async def numbered() -> Any:
        for text in texts:
            yield text

    async with client(broker, topics) as sdk:
        results = [r async for r in sdk.map("minilm", numbered(), batch_size=32, encoding="base64")]
        expected = await reference(sdk, [t for i, t in enumerate(texts) if i != 77])
    assert [r.index for r in results] == list(range(300))
    assert [r.index for r in results if not r.ok] == [77]
    assert isinstance(results[77].error, InputTooLargeError)
    for result in results:
        if result.ok:
            np.testing.assert_allclose(result.output, expected[result.input], atol=2e-5)


def test_the_blocking_client_from_several_threads(
    broker: Broker, topics: dict[str, str], worker: WorkerProcess
) -> None:
    answers: dict[int, list[Any]] = {}
    with SyncClient(broker.bootstrap, topics["request_topic"], topics["response_topic"]) as sdk:

        def call(i: int) -> None:
            answers[i] = sdk.predict("minilm", [sentence(i), sentence(i + 1)])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        mapped = list(sdk.map("minilm", (sentence(i) for i in range(9)), batch_size=4))
        with pytest.raises(UnknownModelError):
            sdk.predict("no-such-model", ["x"])
    assert sorted(answers) == list(range(8))
    assert all(len(pair) == 2 and len(pair[0]) == 384 for pair in answers.values())
    for i in range(8):  # call i's second text is call i+1's first
        if i + 1 in answers:
            np.testing.assert_allclose(answers[i][1], answers[i + 1][0], atol=2e-5)
    assert [r.index for r in mapped] == list(range(9))
    np.testing.assert_allclose(mapped[3].output, answers[3][0], atol=2e-5)


def test_kinfer_infer_prints_the_answer_and_exits_1_on_an_error(
    broker: Broker, topics: dict[str, str], worker: WorkerProcess
) -> None:
    env = {
        "KINFER_BROKER_URL": f"kafka://{broker.bootstrap}",
        "KINFER_REQUEST_TOPIC": topics["request_topic"],
        "KINFER_RESPONSE_TOPIC": topics["response_topic"],
    }
    ok = _kinfer(env, "infer", "--encoding", "base64", "Kafka meets JAX")
    assert ok.returncode == 0, ok.stderr
    answer = orjson.loads(ok.stdout)
    assert answer["encoding"] == "base64"
    assert len(answer["outputs"]) == 1
    bad = _kinfer(env, "infer", "--model", "no-such-model", "x")
    assert bad.returncode == 1
    assert orjson.loads(bad.stdout)["error"]["code"] == "UNKNOWN_MODEL"


def _kinfer(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
