"""The worker's web pages (/live, /ready, /metrics, /models, /models/reload) and SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING, Any

from faust.web import Request as WebRequest
from faust.web import Response as WebResponse
from faust.web import View

from streams.metrics import render

if TYPE_CHECKING:
    from streams.app import KinferApp

log = logging.getLogger(__name__)

__all__ = ["register_pages", "reload_on_sighup"]


def reload_on_sighup(app: KinferApp) -> None:
    """SIGHUP reconciles the model repository (where this loop may install signal handlers)."""

    def reload() -> None:
        log.info("SIGHUP: reloading the model repository")
        task = asyncio.ensure_future(app.manager.reconcile())
        reloads.add(task)  # keep a reference until it is done
        task.add_done_callback(reloads.discard)

    reloads: set[asyncio.Future[Any]] = set()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def register_pages(app: KinferApp) -> None:
    @app.page("/live")
    class Live(View):
        async def get(self, request: WebRequest) -> WebResponse:
            live, detail = app.liveness()
            return self.json({"live": live, **detail}, status=200 if live else 503)

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: WebRequest) -> WebResponse:
            ready, detail = app.readiness()
            return self.json({"ready": ready, **detail}, status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: WebRequest) -> WebResponse:
            body, content_type = render(app.metrics.registry, request.headers.get("Accept"))
            return self.bytes(body, headers={"Content-Type": content_type})

    @app.page("/models")
    class Models(View):
        async def get(self, request: WebRequest) -> WebResponse:
            return self.json({"models": [s.as_json() for s in app.models.describe()]})

    @app.page("/models/reload")
    class Reload(View):
        async def post(self, request: WebRequest) -> WebResponse:
            report = await app.manager.reconcile()
            return self.json(report.as_json(), status=200)
