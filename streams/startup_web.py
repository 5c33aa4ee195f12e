"""``/live``, ``/ready`` and ``/metrics`` while a worker loads and warms up its models.

Faust starts its web server only after the app's own start-up, which here includes loading and
compiling every model (tens of seconds on a CPU). So that the worker is live as soon as the
process runs, this small aiohttp server holds the web port in the meantime: ``/live`` answers
200 (503 once the start-up has taken longer than ``KINFER_STARTUP_TIMEOUT_S``: a warm-up that
hangs gets the worker restarted, as a hung model call does later), ``/ready`` 503 with the
reason, ``/metrics`` the worker's registry. The app closes it at
the end of its ``on_start``, just before Faust's own web server binds the same port (a gap of
milliseconds: the Kafka producer starts in between).
"""

from __future__ import annotations

import logging
import time
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
        *,
        timeout_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``timeout_s``: /live fails once start-up has taken longer (0: never)."""
        self.host, self.port = host, port
        self._registry = registry
        self._doing = doing
        self._timeout_s = timeout_s
        self._clock = clock
        self._started_at = clock()
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
        elapsed = self._clock() - self._started_at
        if self._timeout_s and elapsed > self._timeout_s:
            reason = (
                f"still starting after {elapsed:.0f}s, over KINFER_STARTUP_TIMEOUT_S="
                f"{self._timeout_s:g} ({self._doing()})"
            )
            return _json({"live": False, "reason": reason}, 503)
        return _json({"live": True, "starting": self._doing()}, 200)

    async def _ready(self, request: web.Request) -> web.Response:
        return _json({"ready": False, "reason": f"starting: {self._doing()}"}, 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = render(self._registry, request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})
