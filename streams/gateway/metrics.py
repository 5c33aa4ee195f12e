"""The gateway's Prometheus metrics, served at ``GET /metrics`` on its HTTP port.

`GatewayMetrics` is the gateway's `RequestObserver` (``streams.gateway.observe``): every request
either front end answered is counted, and timed, by protocol, endpoint, model and status (the
HTTP status, or the gRPC code name). ``model`` is the requested model only when the model
repository has it, else empty, so a caller cannot mint label values; tokens never reach it.
Like the health endpoints, ``/metrics`` needs no token: it shows no request's content.
A registry of its own per gateway (never the global default one).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.gateway.observe import Endpoint, Transport
from streams.gateway.service import InferenceGateway
from streams.metrics import LATENCY_BUCKETS, render

__all__ = ["GatewayMetrics"]

LABELS = ("protocol", "endpoint", "model", "status")


class GatewayMetrics:
    """Request counts and latency of one gateway, and its readiness."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "kinfer_gateway_requests",
            "Requests the gateway answered, by protocol (http, grpc), endpoint, model and "
            "status (HTTP status or gRPC code).",
            LABELS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "kinfer_gateway_request_duration_seconds",
            "Time from a request's arrival at the gateway to its answer, by protocol, "
            "endpoint, model and status.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._gateway: InferenceGateway | None = None

    def request_done(
        self,
        *,
        protocol: Transport,
        endpoint: Endpoint,
        model: str | None,
        status: str,
        seconds: float,
    ) -> None:
        """Count and time one answered request (`RequestObserver`)."""
        known = model if model and self._knows(model) else ""
        self.requests.labels(protocol, endpoint, known, status).inc()
        self.duration.labels(protocol, endpoint, known, status).observe(seconds)

    def _knows(self, model: str) -> bool:
        return self._gateway is not None and model in self._gateway.catalog.names()

    def serve_on(self, app: web.Application, gateway: InferenceGateway) -> None:
        """Add ``GET /metrics`` to the gateway's HTTP app, and report ``gateway``'s state."""
        self._gateway = gateway
        self.registry.register(_GatewayState(gateway))

        async def metrics(request: web.Request) -> web.Response:
            body, content_type = render(self.registry, request.headers.get("Accept"))
            return web.Response(body=body, headers={"Content-Type": content_type})

        app.router.add_get("/metrics", metrics)


class _GatewayState(Collector):
    def __init__(self, gateway: InferenceGateway) -> None:
        self._gateway = gateway

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "kinfer_gateway_ready",
            "1 while /v2/health/ready answers 200 (Kafka reached, not stopping).",
            value=1.0 if self._gateway.ready else 0.0,
        )
