"""Broker restart: Tansu (memory storage) comes back empty; the worker recovers by itself."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.broker import EmbeddedBroker
from tests.chaos.tools import TopicReader, produce_records, request_value
from tests.support.topics import committed_total, wait_for_topics, worker_names
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

FAST_BUCKETS = {"KINFER_BATCH_BUCKETS": "32", "KINFER_SEQ_BUCKETS": "32"}


async def round_trip(
    bootstrap: str, names: dict[str, str], ids: list[str], timeout_s: float
) -> Any:
    """Produce one request per id; return the answers read from the response topic."""
    async with TopicReader(bootstrap, [names["response_topic"]]) as reader:
        await produce_records(
            bootstrap,
            names["request_topic"],
            [
                (request_value(rid, [f"after the storm {rid}"]), rid.encode(), (), None)
                for rid in ids
            ],
        )

        def done(records: list[Any]) -> bool:
            return {orjson.loads(r.value)["id"] for r in records} >= set(ids)

        records = await reader.wait_for(done, timeout_s=timeout_s, what="answers")
    return {orjson.loads(r.value)["id"]: orjson.loads(r.value) for r in records}


async def test_worker_recreates_topics_and_serves_after_the_broker_restarts(
    fresh_broker: EmbeddedBroker,
) -> None:
    names = worker_names("b")
    bootstrap = fresh_broker.bootstrap
    with WorkerProcess(bootstrap, {**names, **FAST_BUCKETS}) as worker:
        before = await round_trip(bootstrap, names, [f"before-{i}" for i in range(20)], 60)
        assert all("outputs" in a for a in before.values())

        fresh_broker.restart()  # same port, every topic and offset gone
        restarted = time.monotonic()
        # The worker (not this test) creates every one of its topics again.
        requests, responses = names["request_topic"], names["response_topic"]
        listed = await wait_for_topics(bootstrap, [requests, responses, f"{requests}.dlq"], 60)
        recreated_s = time.monotonic() - restarted
        assert (listed[requests], listed[responses]) == (4, 4)

        after = await round_trip(bootstrap, names, [f"after-{i}" for i in range(20)], 90)
        served_s = time.monotonic() - restarted
        print(f"topics recreated {recreated_s:.1f}s, serving again {served_s:.1f}s after restart")
        assert all("outputs" in a for a in after.values())
        assert worker.proc is not None
        assert worker.proc.poll() is None
        # and it commits again: the group's offsets (new since the restart) cover the 20
        committed = await committed_total(
            bootstrap, names["app_id"], requests, 4, expected=20, timeout_s=15
        )
        assert committed == 20


async def test_worker_recreates_a_lost_response_topic_while_its_request_topic_remains(
    broker: EmbeddedBroker,
) -> None:
    # The partial loss a restart can leave: a consumer's metadata request auto-creates the
    # request topic alone on brokers that allow it, so the worker must check every topic.
    names = worker_names("p")
    requests, responses = names["request_topic"], names["response_topic"]
    bootstrap = broker.bootstrap
    with WorkerProcess(bootstrap, {**names, **FAST_BUCKETS}):
        await round_trip(bootstrap, names, ["before"], 60)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([responses, f"{requests}.dlq"])
        finally:
            await admin.close()
        listed = await wait_for_topics(bootstrap, [responses, f"{requests}.dlq"], 30)
        assert listed[responses] == 4
        after = await round_trip(bootstrap, names, ["after"], 60)
        assert "outputs" in after["after"]
