"""Metrics, health and logs of a real worker and gateway: a known traffic mix, then scrapes of
``/metrics`` parsed by prometheus_client's parser.

One worker (JSON logs, one compiled shape to keep its warm-up short) and one gateway serve the
module. The traffic: 20 good requests over Kafka, 3 that are not JSON, 2 infer calls through the
gateway and 1 for a model nobody serves. Every Grafana dashboard query must find its metric in
these scrapes.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streams.broker import EmbeddedBroker, ExternalBroker
from streams.client import InferenceClient
from tests.support.gateway import GatewayServer
from tests.support.topics import create_worker_topics
from tests.support.worker import WorkerProcess
from tests.unit.test_dashboard import queried_metrics

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

GOOD = 20
NOT_JSON = 3
VIA_GATEWAY = 2
MINILM = {"model": "minilm", "version": "0.1.0"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: str) -> Samples:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@dataclass
class Stack:
    worker: WorkerProcess
    gateway: GatewayServer
    request_topic: str
    response_topic: str
    #: /ready's answer when /live first answered 200 (during warm-up: 503)
    ready_when_live: tuple[int, dict[str, object]]

    @property
    def worker_address(self) -> str:
        return f"127.0.0.1:{self.worker.web_port}"


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker | ExternalBroker) -> Iterator[Stack]:
    names = asyncio.run(create_worker_topics(broker.bootstrap, "metrics"))
    worker = WorkerProcess(
        broker.bootstrap,
        {**names, "batch_buckets": "8", "seq_buckets": "32", "log_format": "json"},
    )
    worker.env.pop("JAX_PLATFORMS", None)  # JAX then probes (and logs about) other backends
    gateway = GatewayServer(
        broker.bootstrap,
        {
            "request_topic": names["request_topic"],
            "gateway_reply_topic": f"kinfer.replies.metrics-{uuid.uuid4().hex[:8]}",
        },
    )
    worker.start(wait=False)
    try:
        ready_when_live = wait_live(f"127.0.0.1:{worker.web_port}", worker)
        with gateway:  # starts while the worker warms up
            worker.wait_ready()
            yield Stack(
                worker, gateway, names["request_topic"], names["response_topic"], ready_when_live
            )
    finally:
        worker.terminate(30)
        worker.close()


def get(address: str, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=2) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, orjson.loads(refused.read())


def wait_live(
    address: str, worker: WorkerProcess, timeout_s: float = 60.0
) -> tuple[int, dict[str, object]]:
    """Wait for /live; returns what /ready said right then."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert worker.proc is not None
        assert worker.proc.poll() is None, worker.log_tail()
        try:
            if get(address, "/live")[0] == 200:
                return get(address, "/ready")
        except OSError:
            pass
        assert time.monotonic() < deadline, "never live"
        time.sleep(0.1)


async def send_traffic(stack: Stack, bootstrap: str) -> list[int]:
    async with InferenceClient(bootstrap, stack.request_topic, stack.response_topic) as client:
        ids = [await client.send([f"sentence number {i}"]) for i in range(GOOD)]
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(NOT_JSON):
                await producer.send_and_wait(
                    stack.request_topic, b"{not json", key=f"b{i}".encode()
                )
        finally:
            await producer.stop()
        answers = await client.collect(ids, 60)
        assert all("error" not in answer for answer in answers.values()), answers
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}
    base = f"http://{stack.gateway.http}/v2/models"
    async with aiohttp.ClientSession() as session:
        statuses = []
        for model in ["minilm"] * VIA_GATEWAY + ["nope"]:
            async with session.post(f"{base}/{model}/infer", json=body) as response:
                statuses.append(response.status)
    return statuses


def settle(address: str, expected_requests: int, timeout_s: float = 30.0) -> Samples:
    """Scrape until every request is counted and every partition's lag is 0."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(address)
        lags = [v for (n, _), v in samples.items() if n == "kinfer_consumer_lag_messages"]
        counted = total(samples, "kinfer_requests_total")
        if counted >= expected_requests and lags and not any(lags):
            time.sleep(0.5)  # nothing more may arrive: the counts must stay as they are
            return scrape(address)
        assert time.monotonic() < deadline, f"not settled: {counted} requests, lags {lags}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def scrapes(stack: Stack, broker: EmbeddedBroker | ExternalBroker) -> tuple[Samples, Samples]:
    statuses = asyncio.run(send_traffic(stack, broker.bootstrap))
    assert statuses == [200] * VIA_GATEWAY + [404]
    worker = settle(stack.worker_address, GOOD + NOT_JSON + VIA_GATEWAY)
    return worker, scrape(stack.gateway.http)


def test_worker_counters_match_the_traffic_sent(scrapes: tuple[Samples, Samples]) -> None:
    worker, _ = scrapes
    answered = GOOD + VIA_GATEWAY
    by_code = {
        (dict(labels)["model"], dict(labels)["code"]): v
        for (name, labels), v in worker.items()
        if name == "kinfer_requests_total"
    }
    assert by_code == {("minilm", "OK"): answered, ("", "INVALID_JSON"): NOT_JSON}
    assert value(worker, "kinfer_requests_total", **MINILM, code="OK") == answered
    assert value(worker, "kinfer_inputs_total", **MINILM) == answered
    assert total(worker, "kinfer_dead_letters_total") == NOT_JSON
    assert value(worker, "kinfer_dead_letters_total", code="INVALID_JSON") == NOT_JSON
    ok = {**MINILM, "code": "OK"}
    assert value(worker, "kinfer_request_duration_seconds_count", **ok) == answered
    assert value(worker, "kinfer_queue_wait_seconds_count", **MINILM) == answered
    # every input of every answered request ran in exactly one batch
    assert value(worker, "kinfer_batch_size_sum", **MINILM) == answered
    batches = value(worker, "kinfer_batch_size_count", **MINILM)
    assert 1 <= batches <= answered
    assert value(worker, "kinfer_batch_compute_seconds_count", **MINILM) == batches
    assert 0 < value(worker, "kinfer_batch_padding_efficiency_ratio_sum", **MINILM) <= batches
    assert value(worker, "kinfer_inputs_in_flight") == 0


def test_nothing_compiles_after_warm_up(scrapes: tuple[Samples, Samples]) -> None:
    worker, _ = scrapes
    assert value(worker, "kinfer_xla_compiles_total") > 0, "the compile counter is not installed"
    assert value(worker, "kinfer_xla_compiles_after_warmup_total") == 0


def test_live_during_warm_up_and_ready_only_after(stack: Stack) -> None:
    status, body = stack.ready_when_live
    assert status == 503
    assert str(body["reason"]).startswith("starting: ")
    assert get(stack.worker_address, "/ready") == (200, {"ready": True})
    assert get(stack.worker_address, "/live") == (200, {"live": True})


def test_lag_per_partition_and_readiness(stack: Stack, scrapes: tuple[Samples, Samples]) -> None:
    worker, gateway = scrapes
    partitions = {
        dict(labels)["partition"]
        for (name, labels), _ in worker.items()
        if name == "kinfer_consumer_lag_seconds" and dict(labels)["topic"] == stack.request_topic
    }
    assert partitions == {"0", "1", "2", "3"}
    assert total(worker, "kinfer_consumer_lag_seconds") == 0
    assert value(worker, "kinfer_worker_ready") == 1
    info = {**MINILM, "state": "ready", "device": "cpu", "dtype": "float32"}
    assert value(worker, "kinfer_model_version_info", **info) == 1
    with urllib.request.urlopen(f"http://{stack.worker_address}/ready", timeout=5) as response:
        assert orjson.loads(response.read()) == {"ready": True}
    assert value(gateway, "kinfer_gateway_ready") == 1


def test_gateway_counts_by_status(scrapes: tuple[Samples, Samples]) -> None:
    _, gateway = scrapes
    infer = {"protocol": "http", "endpoint": "infer"}
    assert value(
        gateway, "kinfer_gateway_requests_total", **infer, model="minilm", status="200"
    ) == (VIA_GATEWAY)
    # a model nobody serves is counted, but never becomes a label value
    assert value(gateway, "kinfer_gateway_requests_total", **infer, model="", status="404") == 1
    ok = {**infer, "model": "minilm", "status": "200"}
    assert value(gateway, "kinfer_gateway_request_duration_seconds_count", **ok) == VIA_GATEWAY


def test_every_dashboard_query_finds_its_metric(scrapes: tuple[Samples, Samples]) -> None:
    worker, gateway = scrapes
    scraped = {name for name, _ in worker} | {name for name, _ in gateway}
    missing = queried_metrics() - scraped
    assert not missing, f"the dashboard queries metrics absent from the scrapes: {sorted(missing)}"


def test_logs_are_json_with_a_banner_and_no_framework_chatter(
    stack: Stack, scrapes: tuple[Samples, Samples]
) -> None:
    lines = [line for line in stack.worker.log_path.read_text().splitlines() if line.strip()]
    records = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    [banner] = [r for r in records if "models" in r and "broker" in r]
    assert banner["broker"] == stack.worker.env["KINFER_BROKER_URL"].removeprefix("kafka://")
    assert banner["topics"]["requests"] == stack.request_topic
    assert [(m["name"], m["version"]) for m in banner["models"]] == [("minilm", "0.1.0")]
    assert banner["devices"] == ["CPU (cpu)"]
    assert banner["dtypes"] == ["float32"]
    assert banner["buckets"] == {"batch": [8], "seq": [32]}
    messages = [r["message"] for r in records]
    assert any(m.startswith("partitions assigned: ") for m in messages)
    assert not [m for m in messages if m.startswith("[^") or "Unable to initialize backend" in m]
