"""Graceful shutdown: SIGTERM answers and commits what was started, exits 0 within the bound."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from streams.app import SHUTDOWN_GRACE_S
from streams.broker import EmbeddedBroker, ExternalBroker
from tests.chaos.tools import TopicReader, produce_records, request_value
from tests.support.topics import create_worker_topics
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.broker, pytest.mark.timeout(200)]

FAST_BUCKETS = {"KINFER_BATCH_BUCKETS": "32", "KINFER_SEQ_BUCKETS": "32"}
SHUTDOWN_TIMEOUT_S = 3.0
BURST = 1500


def ids_of(records: list[Any]) -> list[str]:
    return [orjson.loads(r.value)["id"] for r in records]


async def test_sigterm_exits_0_in_bound_and_nothing_answered_before_is_answered_again(
    broker: EmbeddedBroker | ExternalBroker,
) -> None:
    names = await create_worker_topics(broker.bootstrap, "s")
    settings = {**names, **FAST_BUCKETS, "KINFER_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S)}
    ids = [f"s-{i}" for i in range(BURST)]
    async with TopicReader(broker.bootstrap, [names["response_topic"]]) as reader:
        first = WorkerProcess(broker.bootstrap, settings)
        await asyncio.to_thread(first.start)
        try:
            await produce_records(
                broker.bootstrap,
                names["request_topic"],
                [(request_value(rid, [f"text {rid}"]), rid.encode(), (), None) for rid in ids],
            )
            # wait until the worker is mid-stream, then SIGTERM it
            await reader.wait_for(lambda got: len(got) >= 100, 60, "first answers")
            before_signal = set(ids_of(reader.records))
            signalled = time.monotonic()
            code = await asyncio.to_thread(first.terminate, 60)
            stop_s = time.monotonic() - signalled
        finally:
            first.close()
        await reader.poll(0.5)
        answered_by_exit = set(ids_of(reader.records))
        seen_by_exit = len(reader.records)
        print(
            f"\nSIGTERM: exit code {code} after {stop_s:.2f}s "
            f"(bound {SHUTDOWN_TIMEOUT_S} + {SHUTDOWN_GRACE_S}s); answered before the signal "
            f"{len(before_signal)}, by exit {len(answered_by_exit)} of {BURST}"
        )
        log = first.log_path.read_text(errors="replace")
        assert code == 0, log[-4000:]
        assert stop_s <= SHUTDOWN_TIMEOUT_S + SHUTDOWN_GRACE_S
        assert "graceful stop" in log

        # a new worker in the same group answers the rest, and nothing twice
        with WorkerProcess(broker.bootstrap, settings):
            await reader.wait_for(lambda got: set(ids_of(got)) >= set(ids), 120, "the rest")
            await reader.poll(1.0)
    after = ids_of(reader.records[seen_by_exit:])
    again = before_signal.intersection(after)
    again_by_exit = answered_by_exit.intersection(after)
    print(f"after restart: {len(after)} answers, {len(again_by_exit)} repeats of earlier answers")
    assert not again, f"{len(again)} requests answered before SIGTERM were answered again"
    assert not again_by_exit, "answers published while draining were committed too"
    assert set(ids_of(reader.records)) == set(ids)
