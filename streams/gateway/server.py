"""``kinfer gateway``: HTTP and gRPC servers over one `InferenceGateway`, in one event loop.

Start-up: the settings are checked (a non-loopback address needs a token file, or an explicit
``KINFER_GATEWAY_ALLOW_UNAUTHENTICATED``), the token file and the model repository are read,
both ports are bound, and only then does the gateway connect to Kafka, in the background:
``/v2/health/live`` answers at once, ``/v2/health/ready`` once Kafka is reached.

Stop (SIGTERM, SIGINT): readiness turns false, new calls are refused, the calls in flight get
up to ``STOP_GRACE_S`` to be answered, then the servers and the Kafka client close.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from aiohttp import web

from streams.errors import KinferError
from streams.gateway.auth import Access, OpenAccess, TokenFile
from streams.gateway.catalog import ModelCatalog
from streams.gateway.grpc_service import InferenceServicer, add_to_server
from streams.gateway.kafka_link import KafkaLink
from streams.gateway.metrics import GatewayMetrics
from streams.gateway.observe import NO_OBSERVER, RequestObserver
from streams.gateway.rest import create_app
from streams.gateway.service import InferenceGateway
from streams.security import kafka_security
from streams.settings import Settings

__all__ = ["GatewayConfigError", "GatewayServer", "access_for", "is_loopback", "run_gateway"]

log = logging.getLogger(__name__)

#: How long calls in flight may take to finish once a stop begins.
STOP_GRACE_S = 5.0


class GatewayConfigError(KinferError):
    """The gateway cannot start as configured: says which setting to change."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def access_for(settings: Settings, host: str) -> Access:
    """The token file, or open access where the address and settings allow it."""
    if settings.gateway_tokens_file:
        return TokenFile(settings.gateway_tokens_file)
    if is_loopback(host) or settings.gateway_allow_unauthenticated:
        return OpenAccess()
    raise GatewayConfigError(
        f"refusing to serve on {host} without authentication: set KINFER_GATEWAY_TOKENS_FILE "
        "to a token file (README, 'HTTP and gRPC'), or, where the network already "
        "authenticates callers, KINFER_GATEWAY_ALLOW_UNAUTHENTICATED=true"
    )


@dataclass
class GatewayServer:
    """The two servers of a running gateway and the gateway itself."""

    gateway: InferenceGateway
    runner: web.AppRunner
    grpc_server: grpc.aio.Server
    http_port: int
    grpc_port: int

    async def stop(self) -> None:
        """Refuse new calls, let those in flight finish (bounded), close everything."""
        self.gateway.stopping = True
        await asyncio.gather(self.grpc_server.stop(STOP_GRACE_S), self.runner.cleanup())
        await self.gateway.stop()


async def start_gateway(
    settings: Settings,
    *,
    host: str,
    http_port: int,
    grpc_port: int,
    observer: RequestObserver = NO_OBSERVER,
) -> GatewayServer:
    """Bind both servers and start connecting to Kafka; GatewayConfigError if it cannot."""
    access = access_for(settings, host)
    security = kafka_security(settings)
    catalog = await asyncio.to_thread(ModelCatalog.from_repository, settings.model_repository)
    gateway = InferenceGateway(settings, catalog, KafkaLink(settings, security))
    app = create_app(
        gateway, access, max_body_bytes=settings.gateway_max_body_bytes, observer=observer
    )
    if isinstance(observer, GatewayMetrics):
        observer.serve_on(app, gateway)  # GET /metrics
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_GRACE_S)
    await runner.setup()
    site = web.TCPSite(runner, host, http_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise GatewayConfigError(
            f"cannot listen for HTTP on {host}:{http_port}: {exc.strerror or exc} "
            "(choose another with --http-port)"
        ) from None
    limit = settings.gateway_max_body_bytes
    grpc_server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 64 * 1024 * 1024)),
        ]
    )
    add_to_server(grpc_server, InferenceServicer(gateway, access, observer))
    try:
        bound = grpc_server.add_insecure_port(f"{host}:{grpc_port}")
    except RuntimeError:
        bound = 0
    if not bound:
        await runner.cleanup()
        raise GatewayConfigError(
            f"cannot listen for gRPC on {host}:{grpc_port} (in use?; choose another with "
            "--grpc-port)"
        )
    await grpc_server.start()
    gateway.start()
    actual_http = int(runner.addresses[0][1]) if runner.addresses else http_port
    return GatewayServer(gateway, runner, grpc_server, actual_http, bound)


async def serve(
    settings: Settings,
    *,
    host: str,
    http_port: int,
    grpc_port: int,
    observer: RequestObserver = NO_OBSERVER,
    on_ready: Callable[[GatewayServer], None] | None = None,
) -> None:
    """Run the gateway until SIGTERM or SIGINT (or a Kafka security error, re-raised)."""
    server = await start_gateway(
        settings, host=host, http_port=http_port, grpc_port=grpc_port, observer=observer
    )
    log.info(
        "gateway listening on %s: HTTP %d, gRPC %d; Kafka %s",
        host,
        server.http_port,
        server.grpc_port,
        settings.bootstrap_servers,
    )
    if on_ready is not None:
        on_ready(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    failed = asyncio.create_task(server.gateway.link.failed.wait())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (failed, stopped):
            task.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        log.info("gateway stopping")
        await server.stop()
        log.info("gateway stopped")
    if server.gateway.link.fatal is not None:
        raise server.gateway.link.fatal


def run_gateway(
    settings: Settings,
    *,
    host: str,
    http_port: int,
    grpc_port: int,
    on_ready: Callable[[GatewayServer], None] | None = None,
) -> None:
    """`serve` in a new event loop, with its metrics (the ``kinfer gateway`` command)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                settings,
                host=host,
                http_port=http_port,
                grpc_port=grpc_port,
                observer=GatewayMetrics(),
                on_ready=on_ready,
            )
        )
