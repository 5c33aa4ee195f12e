"""Prometheus metrics of a worker process, served at ``GET /metrics`` on its web port.

Each worker process has a registry of its own (`WorkerMetrics.registry`, never the global
default one), so several apps in one process (tests) never collide, and every worker process of
``kinfer worker --processes N`` is scraped on its own port (web port + i). Names follow
Prometheus' conventions: the ``kinfer_`` prefix, ``_total`` counters, base units (``_seconds``,
``_ratio``). Labels are ``model``, ``version``, ``code``, ``topic`` and ``partition``, never a
request id, a token or anything a request chooses: a request for a model nobody serves is
counted under ``model=""``.

Events (answers, batches) are counted as they happen, through the seams of `streams.observe`;
state (inputs in flight, consumer lag, compiles, readiness, the served versions) is read when
scraped. The README's "Metrics, health and logs" lists every metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from models import compiles
from streams.flow import InFlightLimit
from streams.lag import LagTracker
from streams.model_table import ModelTable
from streams.observe import OK, BatchObserver

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "LATENCY_BUCKETS",
    "OK",
    "PADDING_BUCKETS",
    "WorkerMetrics",
    "render",
]

# ``<name>_created`` series double every counter and histogram for little use
disable_created_metrics()  # type: ignore[no-untyped-call]

#: seconds: from a millisecond (a batch on a GPU) to a minute (a deep backlog)
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: inputs per batch: powers of two, as the batch buckets usually are
BATCH_SIZE_BUCKETS = tuple(float(2**n) for n in range(13))
#: real tokens / computed tokens
PADDING_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)

VERSION = ("model", "version")


class WorkerMetrics:
    """A worker's metrics: the `AnswerObserver` of its pipeline, its batchers' observers."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kinfer_requests",
            "Requests answered (the answer acknowledged by the broker), by model, version and "
            "code: OK or the error code.",
            [*VERSION, "code"],
            registry=r,
        )
        self.inputs = Counter(
            "kinfer_inputs",
            "Inputs (texts, images) answered with a result.",
            VERSION,
            registry=r,
        )
        self.dead_letters = Counter(
            "kinfer_dead_letters",
            "Requests copied to the dead-letter topic, by error code.",
            ["code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "kinfer_request_duration_seconds",
            "End to end: from the request record's Kafka timestamp to the broker's "
            "acknowledgement of its answer.",
            [*VERSION, "code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "kinfer_queue_wait_seconds",
            "Time a request waited in its version's batcher until its batch started.",
            VERSION,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "kinfer_batch_compute_seconds",
            "Model time of one batch (on the compute thread).",
            VERSION,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "kinfer_batch_size",
            "Inputs per batch.",
            VERSION,
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.padding = Histogram(
            "kinfer_batch_padding_efficiency_ratio",
            "Real tokens / computed tokens of one batch (text models).",
            VERSION,
            buckets=PADDING_BUCKETS,
            registry=r,
        )

    # --- events -------------------------------------------------------------------------
    def answered(
        self,
        *,
        model: str,
        version: str,
        code: str,
        inputs: int,
        kafka_timestamp: float,
        queue_ms: float | None,
        dead_letter_code: str | None,
    ) -> None:
        """Count an answered request (`streams.observe.AnswerObserver`)."""
        self.requests.labels(model, version, code).inc()
        if code == OK:
            self.inputs.labels(model, version).inc(inputs)
        if dead_letter_code is not None:
            self.dead_letters.labels(dead_letter_code).inc()
        if kafka_timestamp > 0:
            elapsed = max(0.0, time.time() - kafka_timestamp)
            self.request_duration.labels(model, version, code).observe(elapsed)
        if queue_ms is not None:
            self.queue_wait.labels(model, version).observe(queue_ms / 1000.0)

    def batch_observer(self, model: str, version: str) -> BatchObserver:
        """What one version's batcher calls after every batch."""
        compute = self.compute.labels(model, version)
        size = self.batch_size.labels(model, version)
        padding = self.padding.labels(model, version)

        def observe(inputs: int, timing: Mapping[str, float]) -> None:
            size.observe(inputs)
            if "compute_ms" in timing:
                compute.observe(float(timing["compute_ms"]) / 1000.0)
            computed = float(timing.get("computed_tokens", 0.0))
            if computed > 0:
                padding.observe(float(timing.get("real_tokens", 0.0)) / computed)

        return observe

    # --- state --------------------------------------------------------------------------
    def watch(
        self,
        *,
        in_flight: InFlightLimit,
        lag: LagTracker,
        models: ModelTable,
        ready: Callable[[], bool],
    ) -> None:
        """Report the worker's state at every scrape (call once)."""
        self.registry.register(_WorkerState(in_flight, lag, models, ready))


class _WorkerState(Collector):
    """Gauges and counters read from the worker when scraped."""

    def __init__(
        self,
        in_flight: InFlightLimit,
        lag: LagTracker,
        models: ModelTable,
        ready: Callable[[], bool],
    ) -> None:
        self._in_flight = in_flight
        self._lag = lag
        self._models = models
        self._ready = ready

    def describe(self) -> Iterable[Metric]:
        return []  # the names vary with the state; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "kinfer_inputs_in_flight",
            "Inputs accepted and not yet answered (bounded by KINFER_MAX_IN_FLIGHT).",
            value=self._in_flight.in_flight,
        )
        yield GaugeMetricFamily(
            "kinfer_tokens_in_flight",
            "Estimated tokens accepted and not yet answered (KINFER_MAX_IN_FLIGHT_TOKENS).",
            value=self._in_flight.tokens_in_flight,
        )
        lag_messages = GaugeMetricFamily(
            "kinfer_consumer_lag_messages",
            "Requests not yet answered and committed: log end offset - committed offset.",
            labels=["topic", "partition"],
        )
        lag_seconds = GaugeMetricFamily(
            "kinfer_consumer_lag_seconds",
            "Age of the oldest request not yet committed (0 when none waits).",
            labels=["topic", "partition"],
        )
        for partition in self._lag.snapshot():
            labels = [partition.topic, str(partition.partition)]
            lag_messages.add_metric(labels, partition.messages)
            lag_seconds.add_metric(labels, partition.seconds)
        yield lag_messages
        yield lag_seconds
        counts = compiles.counts()
        yield CounterMetricFamily(
            "kinfer_xla_compiles",
            "XLA compilations in this process (loading and warm-up included).",
            value=counts.total,
        )
        yield CounterMetricFamily(
            "kinfer_xla_compiles_after_warmup",
            "XLA compilations outside loading and warm-up: should stay 0 (each is a request "
            "that waited for a compile).",
            value=counts.unexpected,
        )
        yield GaugeMetricFamily(
            "kinfer_worker_ready",
            "1 while /ready answers 200.",
            value=1.0 if self._ready() else 0.0,
        )
        versions = GaugeMetricFamily(
            "kinfer_model_version_info",
            "Every model version the worker knows, with its state, device and dtype (value 1).",
            labels=[*VERSION, "state", "device", "dtype"],
        )
        for status in self._models.describe():
            versions.add_metric(
                [status.name, status.version, status.state, status.device, status.dtype], 1.0
            )
        yield versions


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The scrape body and its content type, in the format the ``Accept`` header asks for."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
