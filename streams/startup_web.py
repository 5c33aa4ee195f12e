"""``/live``, ``/ready`` and ``/metrics`` while a worker loads and warms up its models.

Faust starts its web server only after the app's own start-up, which here includes loading and
compiling every model (tens of seconds on a CPU). So that the worker is live as soon as the
process runs, this small aiohttp server holds the web port in the meantime: ``/live`` answers
200, ``/ready`` 503 with the reason, ``/metrics`` the worker's registry. The app closes it at
the end of its ``on_start``, just before Faust's own web server binds the same port (a gap of
milliseconds: the Kafka producer starts in between).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from streams.metrics import render

__all__ = ["StartupWeb"]

log = logging.getLogger(__name__)


def _json(doc: object, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


class StartupWeb:
    """The worker's health and metrics endpoints until Faust's web server takes the port."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        doing: Callable[[], str] = lambda: "starting",
    ) -> None:
        self.host, self.port = host, port
        self._registry = registry
        self._doing = doing
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind the port; a port already taken is logged (Faust's server reports it later)."""
        app = web.Application()
        app.router.add_get("/live", self._live)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            log.warning(
                "cannot serve /live on %s:%d during warm-up (%s): it answers once the worker "
                "has started",
                self.host,
                self.port,
                exc.strerror or exc,
            )
            await runner.cleanup()
            return
        self._runner = runner

    async def stop(self) -> None:
        """Free the port (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _live(self, request: web.Request) -> web.Response:
        return _json({"live": True, "starting": self._doing()}, 200)

    async def _ready(self, request: web.Request) -> web.Response:
        return _json({"ready": False, "reason": f"starting: {self._doing()}"}, 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = render(self._registry, request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})
