"""The worker's and the gateway's metrics without a broker: a real pipeline and batcher feed
them, and every check reads a scrape parsed by prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.batch_model import FunctionModel
from streams.batching import MicroBatcher
from streams.broker import free_port
from streams.contract import Limits
from streams.flow import InFlightLimit
from streams.gateway.metrics import GatewayMetrics
from streams.lag import LagTracker
from streams.metrics import WorkerMetrics, render
from streams.model_table import ModelTable
from streams.pipeline import RequestPipeline
from streams.records import Inbound
from streams.startup_web import StartupWeb
from tests.support.models import served_text
from tests.unit.test_pipeline import FakePublisher

pytestmark = pytest.mark.timeout(30)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: Any, accept: str | None = None) -> Samples:
    body, content_type = render(registry, accept)
    assert content_type.startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def rows_of(texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
    await asyncio.sleep(0.01)  # every request of a burst lands in one batch
    real = sum(len(t) for t in texts)
    timing = {"compute_ms": 3.0, "real_tokens": float(real), "computed_tokens": float(2 * real)}
    return np.ones((len(texts), 2), np.float32), timing


@pytest.fixture
async def served() -> AsyncIterator[tuple[WorkerMetrics, RequestPipeline, ModelTable]]:
    metrics = WorkerMetrics()
    batcher = MicroBatcher(FunctionModel(rows_of), max_batch=64, max_wait_s=0.02)
    batcher.observer = metrics.batch_observer("minilm", "v1")
    batcher.start()
    table = ModelTable()
    table.add(served_text(batcher))
    pipeline = RequestPipeline(
        models=table,
        publisher=FakePublisher(),
        default_topic="responses",
        dead_letter_topic="requests.dlq",
        limits=Limits(max_message_bytes=10_000, max_inputs=8, max_input_chars=100),
        observer=metrics,
    )
    yield metrics, pipeline, table
    await batcher.stop()


def message(value: bytes, offset: int, produced: float) -> Inbound:
    return Inbound("requests", offset % 2, offset, b"k", value, (), timestamp=produced)


async def test_requests_inputs_dead_letters_and_latency_match_the_traffic(
    served: tuple[WorkerMetrics, RequestPipeline, ModelTable],
) -> None:
    metrics, pipeline, _ = served
    produced = time.time() - 0.5  # the requests were produced half a second ago
    values = [
        orjson.dumps({"id": f"r{i}", "model": "minilm", "inputs": ["ab", "cde"]}) for i in range(5)
    ]
    values += [b"{not json", orjson.dumps({"id": "u", "model": "nope", "inputs": ["x"]})]
    prepared = [pipeline.prepare(message(v, i, produced)) for i, v in enumerate(values)]
    await asyncio.gather(*(pipeline.handle(p) for p in prepared))

    got = scrape(metrics.registry)
    assert value(got, "kinfer_requests_total", model="minilm", version="v1", code="OK") == 5
    assert value(got, "kinfer_requests_total", model="", version="", code="INVALID_JSON") == 1
    assert value(got, "kinfer_requests_total", model="", version="", code="UNKNOWN_MODEL") == 1
    assert value(got, "kinfer_inputs_total", model="minilm", version="v1") == 10
    assert value(got, "kinfer_dead_letters_total", code="INVALID_JSON") == 1
    assert value(got, "kinfer_dead_letters_total", code="UNKNOWN_MODEL") == 1
    ok = {"model": "minilm", "version": "v1", "code": "OK"}
    assert value(got, "kinfer_request_duration_seconds_count", **ok) == 5
    # counted from the Kafka timestamp: at least the half second before the worker took them
    assert value(got, "kinfer_request_duration_seconds_sum", **ok) >= 5 * 0.5
    assert value(got, "kinfer_request_duration_seconds_bucket", **ok, le="0.25") == 0
    assert value(got, "kinfer_queue_wait_seconds_count", model="minilm", version="v1") == 5
    assert (pipeline.answered, pipeline.errors) == (5, 2)  # the pipeline's own counts agree


async def test_batches_are_observed_once_each_with_size_compute_and_padding(
    served: tuple[WorkerMetrics, RequestPipeline, ModelTable],
) -> None:
    metrics, pipeline, _ = served
    values = [orjson.dumps({"id": i, "model": "minilm", "inputs": ["abcd"] * 4}) for i in range(3)]
    prepared = [pipeline.prepare(message(v, i, time.time())) for i, v in enumerate(values)]
    await asyncio.gather(*(pipeline.handle(p) for p in prepared))

    got = scrape(metrics.registry)
    version = {"model": "minilm", "version": "v1"}
    batches = value(got, "kinfer_batch_size_count", **version)
    assert batches >= 1
    assert value(got, "kinfer_batch_size_sum", **version) == 12  # every input, once
    assert value(got, "kinfer_batch_compute_seconds_count", **version) == batches
    assert value(got, "kinfer_batch_compute_seconds_sum", **version) == pytest.approx(
        0.003 * batches
    )
    assert value(got, "kinfer_batch_padding_efficiency_ratio_sum", **version) == pytest.approx(
        0.5 * batches
    )


async def test_state_is_read_at_scrape_time(
    served: tuple[WorkerMetrics, RequestPipeline, ModelTable],
) -> None:
    metrics, _, table = served
    in_flight = InFlightLimit(100, 1000)
    lag = LagTracker()
    ready = [False]
    metrics.watch(in_flight=in_flight, lag=lag, models=table, ready=lambda: ready[0])
    await in_flight.acquire(7, 70)
    lag.observe(("requests", 3), end=50, committed=40, now=time.time())
    ready[0] = True

    got = scrape(metrics.registry)
    assert value(got, "kinfer_inputs_in_flight") == 7
    assert value(got, "kinfer_tokens_in_flight") == 70
    assert value(got, "kinfer_consumer_lag_messages", topic="requests", partition="3") == 10
    assert (
        ("kinfer_consumer_lag_seconds", frozenset({("topic", "requests"), ("partition", "3")}))
    ) in got
    assert value(got, "kinfer_worker_ready") == 1
    info = {"model": "minilm", "version": "v1", "state": "ready", "device": "", "dtype": ""}
    assert value(got, "kinfer_model_version_info", **info) == 1
    assert ("kinfer_xla_compiles_after_warmup_total", frozenset()) in got

    in_flight.release(7, 70)
    lag.retain([])  # a rebalance took the partition
    again = scrape(metrics.registry)
    assert value(again, "kinfer_inputs_in_flight") == 0
    assert not [key for key in again if key[0] == "kinfer_consumer_lag_messages"]


def test_two_workers_in_one_process_have_separate_registries() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.answered(
        model="m",
        version="1",
        code="OK",
        inputs=1,
        kafka_timestamp=0.0,
        queue_ms=None,
        dead_letter_code=None,
    )
    assert (
        value(scrape(first.registry), "kinfer_requests_total", model="m", version="1", code="OK")
        == 1
    )
    assert (
        value(scrape(second.registry), "kinfer_requests_total", model="m", version="1", code="OK")
        == 0
    )


def test_openmetrics_is_served_when_asked_for() -> None:
    body, content_type = render(WorkerMetrics().registry, "application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_gateway_counts_by_status_and_never_labels_an_unknown_model() -> None:
    metrics = GatewayMetrics()
    gateway: Any = SimpleNamespace(catalog=SimpleNamespace(names=lambda: ["minilm"]), ready=True)
    metrics._gateway = gateway
    metrics.request_done(
        protocol="http", endpoint="infer", model="minilm", status="200", seconds=0.2
    )
    metrics.request_done(
        protocol="http", endpoint="infer", model="x-42", status="404", seconds=0.01
    )
    metrics.request_done(
        protocol="grpc", endpoint="infer", model="minilm", status="OK", seconds=0.1
    )

    got = scrape(metrics.registry)
    http_ok = {"protocol": "http", "endpoint": "infer", "model": "minilm", "status": "200"}
    assert value(got, "kinfer_gateway_requests_total", **http_ok) == 1
    unknown = {"protocol": "http", "endpoint": "infer", "model": "", "status": "404"}
    assert value(got, "kinfer_gateway_requests_total", **unknown) == 1
    assert not [key for key in got if ("model", "x-42") in key[1]]
    grpc_ok = {"protocol": "grpc", "endpoint": "infer", "model": "minilm", "status": "OK"}
    assert value(got, "kinfer_gateway_request_duration_seconds_sum", **grpc_ok) == pytest.approx(
        0.1
    )


async def test_startup_web_is_live_not_ready_and_scrapable_until_it_hands_the_port_over() -> None:
    metrics = WorkerMetrics()
    port = free_port()
    early = StartupWeb("127.0.0.1", port, metrics.registry, lambda: "warming up minilm")
    await early.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/live") as live:
                assert live.status == 200
                assert (await live.json())["live"] is True
            async with session.get(f"{base}/ready") as ready:
                assert ready.status == 503
                assert "warming up minilm" in (await ready.json())["reason"]
            async with session.get(f"{base}/metrics") as scraped:
                assert scraped.status == 200
                assert "kinfer_requests_total" in await scraped.text()
    finally:
        await early.stop()
    await early.stop()  # idempotent
    # the port is free again, for Faust's own web server
    taken = StartupWeb("127.0.0.1", port, metrics.registry)
    await taken.start()
    assert taken._runner is not None
    await taken.stop()


async def test_startup_web_stops_being_live_once_start_up_overruns_its_bound() -> None:
    now = [100.0]
    port = free_port()
    early = StartupWeb(
        "127.0.0.1",
        port,
        WorkerMetrics().registry,
        lambda: "warming up minilm",
        timeout_s=600,
        clock=lambda: now[0],
    )
    await early.start()
    try:
        async with aiohttp.ClientSession() as session:
            now[0] += 599
            async with session.get(f"http://127.0.0.1:{port}/live") as live:
                assert live.status == 200
            now[0] += 2
            async with session.get(f"http://127.0.0.1:{port}/live") as live:
                assert live.status == 503
                reason = (await live.json())["reason"]
    finally:
        await early.stop()
    assert "still starting after 601s" in reason
    assert "KINFER_STARTUP_TIMEOUT_S=600" in reason
    assert "warming up minilm" in reason
