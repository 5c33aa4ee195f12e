"""The seam for the gateway's metrics: every finished request is reported to an observer.

Both front ends (REST and gRPC) call `RequestObserver.request_done` once per request, after
its answer is decided, with how long it took. The default observer does nothing; a metrics
observer (Prometheus histograms of latency by status, counters by model and code) plugs in
through `streams.gateway.server.serve(observer=...)`. Tokens never reach an observer.
"""

from __future__ import annotations

from typing import Literal, Protocol

__all__ = ["NO_OBSERVER", "Endpoint", "NoObserver", "RequestObserver", "Transport"]

Transport = Literal["http", "grpc"]
Endpoint = Literal[
    "health_live",
    "health_ready",
    "server_metadata",
    "model_metadata",
    "model_ready",
    "infer",
    "other",
]


class RequestObserver(Protocol):
    """Told about every request the gateway answered."""

    def request_done(
        self,
        *,
        protocol: Transport,
        endpoint: Endpoint,
        model: str | None,
        status: str,
        seconds: float,
    ) -> None:
        """``status``: the HTTP status (``"200"``, ``"404"``) or gRPC code name (``"OK"``)."""
        ...


class NoObserver:
    """The default: observes nothing."""

    def request_done(
        self,
        *,
        protocol: Transport,
        endpoint: Endpoint,
        model: str | None,
        status: str,
        seconds: float,
    ) -> None:
        return None


NO_OBSERVER = NoObserver()
