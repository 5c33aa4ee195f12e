"""Real Kafka limits, on the real broker with a real Faust app: an answer over the record size
a default Kafka broker accepts, and concurrent SDK calls sharing one client.

Tansu does not enforce ``max.message.bytes``, so kinfer enforces it itself: the answer is
checked against ``KINFER_MAX_ANSWER_BYTES`` (default: what a default Apache Kafka accepts) and
the producer's ``max_request_size`` is the same bound. The model is a fake with MiniLM's output
width (384 floats a row, ~4.7 KB of JSON), so 300 inputs make a 1.4 MB answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.batch_model import UnpreparedModel
from streams.client import InferenceClient
from streams.records import DLQ_CODE_HEADER, DLQ_OFFSET_HEADER
from tests.support.answers import AnswerReader
from tests.support.inprocess import fresh_settings, running_app
from tests.support.topics import committed_total

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

DIM = 384


class WideRunner(UnpreparedModel):
    """Rows of 384 floats, as MiniLM's; each row's first value is its text's length."""

    name = "minilm"
    version = "fake-1"
    output_dim = DIM

    async def infer_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
        rows = np.random.default_rng(len(texts)).random((len(texts), DIM), np.float32)
        rows[:, 0] = [len(t) for t in texts]
        return rows, {"compute_ms": 0.1}

    def close(self) -> None:
        pass


def header(record: Any, name: str) -> bytes | None:
    return next((value for key, value in record.headers if key == name), None)


async def test_an_answer_over_kafkas_default_limit_is_an_error_and_its_partition_flows_on(
    broker: Any, unique_name: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = await fresh_settings(broker.bootstrap, unique_name, partitions=1)
    assert settings.max_answer_bytes < 1_048_588  # a default broker's message.max.bytes
    requests = {
        "before": ["a short one"],
        "huge": [f"text {i}" for i in range(300)],  # ~1.4 MB of answer as floats
        "after-1": ["b"],
        "after-2": ["cc"],
    }
    async with running_app(settings, WideRunner(), monkeypatch) as app:
        assert app.conf.producer_max_request_size == settings.max_answer_bytes
        async with (
            AnswerReader(broker.bootstrap, settings.response_topic) as reader,
            AnswerReader(broker.bootstrap, settings.dead_letter_topic) as letters,
        ):
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
            await producer.start()
            try:
                for rid, inputs in requests.items():  # one key: one partition, in this order
                    value = orjson.dumps({"id": rid, "model": "minilm", "inputs": inputs})
                    await producer.send_and_wait(settings.request_topic, value, key=b"one-key")
            finally:
                await producer.stop()
            answers = await reader.collect(set(requests), timeout_s=60)
            await letters.collect({"huge"}, timeout_s=30)
        total = await committed_total(
            broker.bootstrap,
            settings.app_id,
            settings.request_topic,
            1,
            expected=len(requests),
            timeout_s=30,
        )
    error = answers["huge"]["error"]
    assert error["code"] == "INPUT_TOO_LARGE"
    assert "KINFER_MAX_ANSWER_BYTES" in error["message"]
    for rid in ("before", "after-1", "after-2"):
        assert len(answers[rid]["outputs"][0]) == DIM
        assert answers[rid]["outputs"][0][0] == float(len(requests[rid][0]))
    # the answers went out in the order of their partition, the error in its place
    offsets = [reader.records[rid].offset for rid in requests]
    assert offsets == sorted(offsets)
    letter = letters.records["huge"]
    assert header(letter, DLQ_CODE_HEADER) == b"INPUT_TOO_LARGE"
    assert header(letter, DLQ_OFFSET_HEADER) == b"1"
    assert total == len(requests)  # nothing wedged: every request committed


async def test_concurrent_infer_calls_on_one_client_each_get_their_own_answer(
    broker: Any, unique_name: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = await fresh_settings(broker.bootstrap, unique_name, partitions=2)
    texts = [["x" * (i + 1)] * (1 + i % 3) for i in range(24)]
    async with (
        running_app(settings, WideRunner(), monkeypatch),
        InferenceClient(
            broker.bootstrap, settings.request_topic, settings.response_topic
        ) as client,
    ):
        answers = await asyncio.wait_for(
            asyncio.gather(*(client.infer(inputs, timeout_s=30) for inputs in texts)), 60
        )
        # and sequential calls keep working on the same client afterwards
        again = await client.infer(["after"], timeout_s=30)
    for inputs, answer in zip(texts, answers, strict=True):
        assert [row[0] for row in answer["outputs"]] == [float(len(t)) for t in inputs]
    assert len({answer["id"] for answer in answers}) == len(texts)
    assert again["outputs"][0][0] == 5.0
