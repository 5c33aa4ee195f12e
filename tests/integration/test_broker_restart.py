"""Broker restart: Tansu (memory storage) comes back empty; the worker recovers by itself."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.broker import EmbeddedBroker
from tests.chaos.tools import TopicReader, produce_records, request_value
from tests.support.gateway import GatewayServer
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


async def infer_over_http(
    session: aiohttp.ClientSession, gateway: GatewayServer, text: str, timeout_s: float
) -> tuple[int, str]:
    """POST one text to the gateway's minilm: the HTTP status (0: no answer in time), and the
    error if it was not 200."""
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    url = f"http://{gateway.http}/v2/models/minilm/infer"
    try:
        async with session.post(
            url, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            doc = await response.json()
            if response.status != 200:
                return response.status, str(doc.get("error"))
            assert len(doc["outputs"][0]["data"]) == 384
            return 200, ""
    except TimeoutError:
        return 0, f"no answer in {timeout_s}s"


async def test_the_gateway_reads_its_answers_again_after_the_broker_restarts(
    fresh_broker: EmbeddedBroker,
) -> None:
    # Tansu comes back without the gateway's reply topic. Recreated (by the worker's answers, or
    # by anyone), its offsets start at 0 again, below where the gateway's reader stood: without
    # a restart of its client the gateway would miss those answers and time out (here, for
    # about 30 answers per partition: longer than the test waits).
    names = worker_names("gr")
    bootstrap = fresh_broker.bootstrap
    reply_topic = f"kinfer.replies.{names['app_id']}"
    gateway_settings = {
        "request_topic": names["request_topic"],
        "gateway_reply_topic": reply_topic,
        "gateway_timeout_s": "20",
    }
    with (
        WorkerProcess(bootstrap, {**names, **FAST_BUCKETS}),
        GatewayServer(bootstrap, gateway_settings) as gateway,
    ):
        async with aiohttp.ClientSession() as session:
            # 120 answers: each reply partition's reader stands ~30 records in
            before = [infer_over_http(session, gateway, f"before {i}", 60) for i in range(120)]
            assert await asyncio.gather(*before) == [(200, "")] * 120

            fresh_broker.restart()
            restarted = time.monotonic()
            # rounds of 24 concurrent requests until one is answered in full (a round during the
            # recovery may see a 503: the client restarting, a publish refused meanwhile)
            answered: list[tuple[int, str]] = []
            while answered != [(200, "")] * 24:
                assert time.monotonic() - restarted < 75, f"not serving again: {answered}"
                round_ = [infer_over_http(session, gateway, f"after {i}", 20) for i in range(24)]
                answered = list(await asyncio.gather(*round_))
                print(f"{time.monotonic() - restarted:5.1f}s: {sorted(set(answered))}")
                await asyncio.sleep(0.5)
            serving_s = time.monotonic() - restarted
        print(f"the gateway answered again {serving_s:.1f}s after the broker restarted")
        listed = await wait_for_topics(bootstrap, [reply_topic], 10)
        assert listed[reply_topic] == 4
