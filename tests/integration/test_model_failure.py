"""A model that raises on one input: the worker isolates it and answers everything else.

Real broker, real Faust app and consumer group, in this process; the model is a fake that raises
whenever a batch holds the poisoned text (the real MiniLM has no input that makes it raise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.batch_model import UnpreparedModel
from tests.support.answers import AnswerReader
from tests.support.inprocess import fresh_settings, running_app

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

POISON = "this input makes the model raise"


class PoisonedRunner(UnpreparedModel):
    name = "minilm"
    version = "fake-1"
    output_dim = 1
    calls = 0

    async def infer_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
        PoisonedRunner.calls += 1
        if POISON in texts:
            raise FloatingPointError("NaN in layer 3")
        return np.array([[float(len(t))] for t in texts], np.float32), {"compute_ms": 0.1}

    def close(self) -> None:
        pass


async def test_a_failing_input_gets_internal_and_the_rest_of_its_batch_results(
    broker: Any, unique_name: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = await fresh_settings(
        broker.bootstrap,
        unique_name,
        partitions=2,
        max_wait_ms=200,  # one batch gathers all
    )
    async with running_app(settings, PoisonedRunner(), monkeypatch):
        requests = {f"ok-{i}": ["a" * (i + 1), "bb"] for i in range(6)}
        requests["bad"] = ["fine", POISON, "also fine"]
        async with AnswerReader(broker.bootstrap, settings.response_topic) as reader:
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
            await producer.start()
            try:
                for rid, inputs in requests.items():
                    value = orjson.dumps({"id": rid, "model": "minilm", "inputs": inputs})
                    await producer.send(settings.request_topic, value, key=rid.encode())
                await producer.flush()
                answers = await reader.collect(set(requests), timeout_s=30)
                # the worker is still up and serving
                after = orjson.dumps({"id": "after", "model": "minilm", "inputs": ["xyz"]})
                await producer.send_and_wait(settings.request_topic, after)
                later = await reader.collect({"after"}, timeout_s=30)
            finally:
                await producer.stop()
    assert answers["bad"]["error"]["code"] == "INTERNAL"
    assert "inputs[1]" in answers["bad"]["error"]["message"]
    assert "error reference" in answers["bad"]["error"]["message"]
    assert "NaN in layer 3" not in answers["bad"]["error"]["message"]  # it is in the log only
    for rid, inputs in requests.items():
        if rid != "bad":
            assert answers[rid]["outputs"] == [[float(len(t))] for t in inputs]
    assert later["after"]["outputs"] == [[3.0]]
    assert PoisonedRunner.calls > 2  # the failing batch was split and retried
