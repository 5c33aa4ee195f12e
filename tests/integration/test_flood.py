"""A flood: the worker holds a bounded number of requests and leaves the rest in Kafka.

Real broker, real Faust app and consumer group, in this process; the model is a fake that blocks
until the test opens a gate, so a backlog of thousands of requests meets a stuck model. The
worker must stop pulling records (not buffer the backlog), then answer every request once the
model moves again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from faust.transport.drivers.aiokafka import Consumer as FaustAIOKafkaConsumer

from streams import app as app_module
from streams.batch_model import UnpreparedModel
from tests.chaos.tools import produce_records, request_value
from tests.support.answers import AnswerReader
from tests.support.inprocess import fresh_settings, running_app
from tests.support.topics import committed_total

pytestmark = [pytest.mark.broker, pytest.mark.timeout(150)]

BACKLOG = 3000
MAX_IN_FLIGHT = 8
#: what create_app gives Faust's stream buffer for that limit (max(64, max_in_flight))
STREAM_BUFFER = 64


class GatedRunner(UnpreparedModel):
    """Answers nothing until ``gate`` is set; counts the rows it was asked for."""

    name = "minilm"
    version = "fake-1"
    output_dim = 1

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.called = asyncio.Event()
        self.rows = 0

    async def infer_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
        self.rows += len(texts)
        self.called.set()
        await self.gate.wait()
        return np.array([[float(len(t))] for t in texts], np.float32), {"compute_ms": 0.1}

    def close(self) -> None:
        pass


async def test_a_flood_against_a_stuck_model_is_held_in_kafka_not_in_memory(
    broker: Any, unique_name: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Count every record the Faust consumer hands on from Kafka (each becomes a Message).
    pulled = 0
    original = FaustAIOKafkaConsumer._to_message

    def counting_to_message(self: Any, tp: Any, record: Any) -> Any:
        nonlocal pulled
        pulled += 1
        return original(self, tp, record)

    monkeypatch.setattr(FaustAIOKafkaConsumer, "_to_message", counting_to_message)

    settings = await fresh_settings(
        broker.bootstrap, unique_name, partitions=2, max_in_flight=MAX_IN_FLIGHT, max_batch=8
    )
    runner = GatedRunner()
    padding = "x" * 1000  # ~1 KB requests: 3 MB of backlog
    ids = [f"r{i}" for i in range(BACKLOG)]
    async with (
        running_app(settings, runner, monkeypatch) as app,
        AnswerReader(broker.bootstrap, settings.response_topic) as reader,
    ):
        try:
            await produce_records(
                broker.bootstrap,
                settings.request_topic,
                [(request_value(rid, [f"{rid} {padding}"]), rid.encode(), (), None) for rid in ids],
            )
            await asyncio.sleep(4)  # let the worker pull all it is going to

            held_in_flight = app.in_flight.in_flight
            pulled_while_stuck = pulled
            answered_while_stuck = await reader.poll()
            paused = set(app.consumer._buffered_partitions)
            print(
                f"stuck model: {pulled_while_stuck} of {BACKLOG} pulled, "
                f"{held_in_flight} in flight, buffered partitions {sorted(paused)}"
            )
            assert held_in_flight == MAX_IN_FLIGHT
            assert 0 < runner.rows <= MAX_IN_FLIGHT  # the model holds only what is in flight
            assert answered_while_stuck == 0
            # in flight + the one waiting for room + Faust's stream buffer + one blocked put
            assert pulled_while_stuck <= MAX_IN_FLIGHT + 1 + STREAM_BUFFER + 1
            assert paused, "Faust did not pause the partitions whose buffer is full"
        finally:
            runner.gate.set()  # also when an assertion failed: let the app stop
        answers = await reader.collect(set(ids), timeout_s=90)
    assert all(answers[rid]["outputs"] == [[float(len(f"{rid} {padding}"))]] for rid in ids)
    assert reader.duplicates == 0
    committed = await committed_total(
        broker.bootstrap, settings.app_id, settings.request_topic, 2, expected=BACKLOG, timeout_s=15
    )
    assert committed == BACKLOG


async def test_a_stop_with_a_stuck_model_ends_in_its_bound_and_commits_nothing_unanswered(
    broker: Any, unique_name: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Faust's own wait_empty has no bound and swallows the cancellation of a timeout: a stop
    # that relied on it ran into the hard-exit watchdog (exit 70) instead of ending cleanly.
    hard_exits: list[float] = []
    monkeypatch.setattr(app_module, "_exit_hard", hard_exits.append)
    settings = await fresh_settings(
        broker.bootstrap, unique_name, partitions=2, max_in_flight=8, shutdown_timeout_s=2
    )
    runner = GatedRunner()
    async with running_app(settings, runner, monkeypatch) as app:
        await produce_records(
            broker.bootstrap,
            settings.request_topic,
            [(request_value(f"r{i}", ["text"]), None, (), None) for i in range(200)],
        )
        await asyncio.wait_for(runner.called.wait(), 30)
        stopping = asyncio.create_task(app.stop())
        done, _ = await asyncio.wait({stopping}, timeout=2 + app_module.SHUTDOWN_GRACE_S)
        runner.gate.set()  # lets a stop that overran end, so that a regression fails, not hangs
        await stopping
        assert stopping in done, "the stop did not end within its bound"
    assert not hard_exits
    assert "requests still unanswered after 2.0s" in caplog.text
    committed = await committed_total(
        broker.bootstrap, settings.app_id, settings.request_topic, 2, expected=0, timeout_s=0
    )
    assert committed == 0
