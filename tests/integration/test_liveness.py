"""Liveness and rebalance bounds with the real broker, Faust app and consumer group.

- A systemic model failure (a closed runner, out of memory) is not answered request by request
  with INTERNAL: the worker stops consuming, /live fails, nothing more is committed, and
  another worker of the group answers everything once the broken one is gone.
- A handler that raises leaves its request unacked; a rebalance still completes (its wait is
  bounded) and the worker reports itself unhealthy, so it is replaced.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from models.errors import RunnerClosedError
from streams import app as app_module
from streams.batch_model import UnpreparedModel
from streams.broker import free_port
from streams.pipeline import Prepared, RequestPipeline
from tests.support.answers import AnswerReader
from tests.support.inprocess import fresh_settings, running_app
from tests.support.topics import committed_total

pytestmark = [pytest.mark.broker, pytest.mark.timeout(150)]


class Runner(UnpreparedModel):
    name = "minilm"
    version = "fake-1"
    output_dim = 1

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.calls = 0

    async def infer_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
        self.calls += 1
        if self.broken:
            raise RunnerClosedError(self.name)
        return np.array([[float(len(t))] for t in texts], np.float32), {"compute_ms": 0.1}

    def close(self) -> None:
        pass


def _http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def http_status(port: int, path: str) -> int:
    """GET the in-process app's health page (served by this very event loop)."""
    return await asyncio.to_thread(_http_status, port, path)


async def produce(bootstrap: str, topic: str, ids: Sequence[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for rid in ids:
            value = orjson.dumps({"id": rid, "model": "minilm", "inputs": [rid]})
            await producer.send(topic, value, key=rid.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def eventually(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s}s"
        await asyncio.sleep(0.2)


async def test_a_systemic_model_failure_stops_consuming_and_another_worker_answers_all(
    broker: Any, unique_name: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = await fresh_settings(broker.bootstrap, unique_name, partitions=2, max_batch=4)
    ids = [f"r{i}" for i in range(20)]
    broken = Runner(broken=True)
    async with AnswerReader(broker.bootstrap, settings.response_topic) as reader:
        async with running_app(settings, broken, monkeypatch) as app:
            assert await http_status(settings.web_port, "/live") == 200
            await produce(broker.bootstrap, settings.request_topic, ids)
            await eventually(lambda: app.failure() is not None, 30, "the worker gives up")
            assert await http_status(settings.web_port, "/live") == 503
            assert await http_status(settings.web_port, "/ready") == 503
            await asyncio.sleep(3 * app.conf.broker_commit_interval)  # commit rounds pass
            await reader.poll(1.0)
            assert reader.answers == {}  # not a flood of INTERNAL answers
            assert broken.calls == 1  # no bisection over a runner that cannot run anything
        committed = await committed_total(
            broker.bootstrap, settings.app_id, settings.request_topic, 2, expected=1, timeout_s=2
        )
        assert committed == 0
        # the orchestrator replaces it: the new worker answers every request
        async with running_app(settings, Runner(), monkeypatch):
            answers = await reader.collect(set(ids), timeout_s=60)
    assert all(answers[rid]["outputs"] == [[float(len(rid))]] for rid in ids)


async def test_a_handler_that_raises_does_not_hold_up_a_rebalance(
    broker: Any, unique_name: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = await fresh_settings(broker.bootstrap, unique_name, partitions=2)
    original = RequestPipeline.handle
    buggy: list[RequestPipeline] = []

    async def handle(self: RequestPipeline, prepared: Prepared) -> None:
        request = prepared.request
        if self in buggy and request is not None and request.id == "boom":
            raise RuntimeError("a bug in the handler")
        await original(self, prepared)

    monkeypatch.setattr(RequestPipeline, "handle", handle)
    async with (
        AnswerReader(broker.bootstrap, settings.response_topic) as reader,
        running_app(settings, Runner(), monkeypatch) as first,
    ):
        assert first.pipeline is not None
        buggy.append(first.pipeline)
        assignments = 0

        async def count(sender: object, assigned: object, **kwargs: object) -> None:
            nonlocal assignments
            assignments += 1

        first.on_partitions_assigned.connect(count)  # type: ignore[arg-type]
        await produce(broker.bootstrap, settings.request_topic, ["ok-1", "ok-2"])
        await reader.collect({"ok-1", "ok-2"}, timeout_s=30)
        await produce(broker.bootstrap, settings.request_topic, ["boom"])
        await eventually(lambda: first.failure() is not None, 10, "the worker declares the bug")
        assert not first.liveness()[0]
        # a second member joins: the first must get through the rebalance, "boom" unacked
        second = app_module.create_app(settings.model_copy(update={"web_port": free_port()}))
        await second.start()
        try:
            await eventually(lambda: assignments >= 1, 30, "the first worker's rebalance")
            await eventually(second.is_ready, 30, "the second worker's assignment")
        finally:
            await second.stop()
