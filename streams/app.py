"""The Faust application: ``create_app(settings)``, and ``app`` for ``faust -A streams.app worker``.

Start-up order: the model is loaded and every shape bucket compiled (warm-up) and the topics are
created *before* the consumer joins its group, so no request ever waits on a compile and the
worker only reports ready once it can answer at full speed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.web import Request as WebRequest
from faust.web import Response as WebResponse
from faust.web import View

from streams.agents import register_agent
from streams.batching import MicroBatcher
from streams.broker import ensure_topics
from streams.contract import Limits
from streams.flow import InFlightLimit
from streams.pipeline import RequestPipeline, ServedModel
from streams.publisher import FaustPublisher
from streams.serving import load_runner
from streams.settings import Settings, get_settings
from streams.topics import declared_topics

log = logging.getLogger(__name__)


class KinferApp(faust.App):
    """A Faust app that owns the model runner, the batcher and the request pipeline."""

    kinfer_settings: Settings
    pipeline: RequestPipeline | None = None
    batcher: MicroBatcher | None = None
    in_flight: InFlightLimit
    runner: Any = None
    ready: bool = False

    async def on_first_start(self) -> None:
        await super().on_first_start()
        settings = self.kinfer_settings
        started = time.perf_counter()
        self.runner = await asyncio.to_thread(load_runner, settings)
        log.info(
            "model %s (%s) loaded and warmed up in %.1fs",
            self.runner.name,
            self.runner.version,
            time.perf_counter() - started,
        )

    async def on_start(self) -> None:
        await super().on_start()
        settings = self.kinfer_settings
        await ensure_topics(settings.bootstrap_servers, declared_topics(settings))
        self.batcher = MicroBatcher(
            self.runner.infer_rows,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000.0,
        )
        self.batcher.start()
        self.pipeline = RequestPipeline(
            batcher=self.batcher,
            publisher=FaustPublisher(self),
            served=ServedModel(self.runner.name, self.runner.version),
            default_topic=settings.response_topic,
            dead_letter_topic=settings.dead_letter_topic,
            limits=Limits(
                max_message_bytes=settings.max_message_bytes,
                max_inputs=settings.max_inputs_per_request,
                max_input_chars=settings.max_input_chars,
            ),
        )

    async def _mark_ready(self, sender: object, assigned: object, **kwargs: object) -> None:
        # ready once warm (on_first_start) and a member of the group with its assignment
        self.ready = True

    async def on_shutdown(self) -> None:
        # The consumer has already waited for every started request to be answered and acked.
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()
        if self.runner is not None:
            self.runner.close()
        await super().on_shutdown()


def create_app(settings: Settings | None = None) -> KinferApp:
    """Build the worker's Faust app from ``settings`` (default: the environment)."""
    settings = settings or get_settings()
    app = KinferApp(
        settings.app_id,
        broker=settings.broker_url,
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        stream_buffer_maxsize=max(64, settings.max_in_flight),
        broker_commit_interval=1.0,
        broker_rebalance_timeout=5,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        producer_max_request_size=max(settings.max_message_bytes * 8, 1_048_576),
        consumer_max_fetch_size=max(settings.max_message_bytes * 4, 4_194_304),
    )
    app.kinfer_settings = settings
    app.in_flight = InFlightLimit(settings.max_in_flight)
    app.on_partitions_assigned.connect(app._mark_ready)  # type: ignore[arg-type]
    register_agent(app, settings)
    _register_health(app)
    return app


def _register_health(app: KinferApp) -> None:
    @app.page("/live")
    class Live(View):
        async def get(self, request: WebRequest) -> WebResponse:
            return self.json({"live": True})

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: WebRequest) -> WebResponse:
            status = 200 if app.ready else 503
            return self.json({"ready": app.ready}, status=status)


def __getattr__(name: str) -> KinferApp:
    # ``faust -A streams.app worker`` looks up ``app`` here; built on first use so that importing
    # this module (as the kinfer CLI does) creates no app from the environment.
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)


app: KinferApp
