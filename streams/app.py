"""The Faust application: ``create_app(settings)``, and ``app`` for ``faust -A streams.app worker``.

Start-up order: the models are loaded and every shape bucket compiled (warm-up) and the topics
are created *before* the consumer joins its group, so no request ever waits on a compile and the
worker only reports ready once it can answer at full speed.

Models: the worker serves every model and version of its repository (``KINFER_MODELS``
narrows that), each with a batcher of its own (`streams.model_table`), and swaps versions while
it serves (`streams.model_manager`): every ``KINFER_MODEL_WATCH_INTERVAL_S``, on SIGHUP and on
``POST /models/reload``. ``GET /models`` lists every version with its state.

Broker restart: `streams.topic_watch` creates the declared topics again when the broker lost them,
and the consumer resubscribes without a restart of the worker.

Graceful stop (SIGTERM): the consumer stops fetching and the agent starts nothing new; the
requests it had started are answered, acked and committed, a wait bounded by
``shutdown_timeout_s``. Requests still unanswered then are cancelled, and they and the messages
still buffered stay uncommitted (another worker answers them). The whole stop ends within
``shutdown_timeout_s`` + ``SHUTDOWN_GRACE_S``; past that the process exits hard (code 70).

Rebalance: the same wait, bounded by ``REBALANCE_WAIT_S`` (within Faust's rebalance timeout):
what is still unanswered then is cancelled and stays uncommitted; Faust seeks every partition
back to its committed offset after a rebalance, so it is answered again by whoever owns it.

Health: ``/live`` fails (503) once the worker cannot serve (a systemic model failure, its own
topics refusing its answers, a handler that raised: :meth:`KinferApp.failure`) or when a model
call has run longer than ``liveness_timeout_s`` (a hung model), so the orchestrator restarts it;
the agent then takes nothing more and what it holds stays uncommitted. ``/ready`` is true only
while the worker is warm, live, not stopping and a member of its group with an assignment (it
is cleared when a rebalance starts), and not while its consumer is stalled (`streams.lag`).
Both answer from the process's first second: until Faust's web server starts, after the
warm-up, `streams.startup_web` holds the port. ``/metrics`` is `streams.metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from typing import Any

import faust

from models import compiles
from streams.admin import ensure_topics
from streams.agents import register_agent
from streams.app_web import register_pages, reload_on_sighup
from streams.consumer import consumer_class
from streams.enrich.agents import register_enrich_agents, start_routes
from streams.enrich.pipeline import EnrichPipeline
from streams.flow import InFlightLimit
from streams.lag import LagTracker, watch_lag
from streams.logs import banner
from streams.metrics import WorkerMetrics
from streams.model_manager import ModelManager, request_limits
from streams.model_table import ModelTable
from streams.pipeline import RequestPipeline
from streams.processes import apply_accelerator_env
from streams.publisher import FaustPublisher
from streams.replyto import ReplyToPolicy
from streams.security import KafkaSecurity, fail_fast, kafka_security
from streams.settings import Settings, get_settings
from streams.startup_web import StartupWeb
from streams.topic_watch import watch_topics
from streams.topics import declared_topics

log = logging.getLogger(__name__)

#: Time a graceful stop may take beyond ``shutdown_timeout_s`` (leave the group, close clients).
SHUTDOWN_GRACE_S = 10.0
#: Exit code of a stop that overran ``shutdown_timeout_s + SHUTDOWN_GRACE_S``.
EXIT_SHUTDOWN_OVERRUN = 70
#: Faust's rebalance timeout here (``broker_rebalance_timeout``): a member must rejoin within it.
REBALANCE_TIMEOUT_S = 5
#: Bound on a rebalance's wait for the requests the worker started (within the timeout above).
REBALANCE_WAIT_S = 3.0


class KinferApp(faust.App):
    """A Faust app that owns the served models, their batchers and the request pipeline."""

    kinfer_settings: Settings
    #: TLS and SASL for every Kafka client of the worker (Faust's, the admin client's)
    kafka_security: KafkaSecurity
    pipeline: RequestPipeline | None = None
    #: the served model versions (one batcher each)
    models: ModelTable
    manager: ModelManager
    in_flight: InFlightLimit
    ready: bool = False
    #: the agents' per-message tasks (answer, then ack), requests and enrichment alike
    handler_tasks: set[asyncio.Task[None]]
    #: the enrichment routes' pipelines, by route name (built in on_start)
    enrichers: dict[str, EnrichPipeline]
    #: the topics the worker owns for its routes (sinks, dead-letter topics) -> partitions
    route_topics: dict[str, int]
    #: set when a graceful stop begins: the agent starts nothing more (what it took stays
    #: uncommitted and is delivered again)
    stopping: bool = False
    _watchdog: threading.Timer | None = None
    _topic_watch: asyncio.Task[None] | None = None
    _model_watch: asyncio.Task[None] | None = None
    _failure: str | None = None
    #: Prometheus metrics (GET /metrics) and the request partitions' lag (streams/lag.py)
    metrics: WorkerMetrics
    lag: LagTracker
    _lag_watch: asyncio.Task[None] | None = None
    #: /live, /ready and /metrics until Faust's web server starts (streams/startup_web.py)
    _startup_web: StartupWeb | None = None
    _starting: str = "starting"

    async def on_first_start(self) -> None:
        await super().on_first_start()
        settings = self.kinfer_settings
        self._startup_web = StartupWeb(
            settings.web_host,
            settings.web_port,
            self.metrics.registry,
            lambda: self._starting,
            timeout_s=settings.startup_timeout_s,
        )
        await self._startup_web.start()  # live from here on, as the process runs
        self._starting = "loading and warming up the models"
        # fail at once, before the warm-up, when TLS or SASL cannot work as set (a broker that
        # is merely down is waited for by ensure_topics, after it)
        log.info("Kafka security: %s", self.kafka_security.describe())
        await fail_fast(self.kafka_security, settings.bootstrap_servers)
        started = time.perf_counter()
        compiles.install()  # from here on, a compile outside loading and warm-up is counted
        await self.manager.load_initial()
        log.info(
            "models loaded and warmed up in %.1fs: %s",
            time.perf_counter() - started,
            ModelTable.served_summary(self.models.served_versions()),
        )
        text, fields = banner(settings, self.models.describe())
        log.info("%s", text, extra={"fields": fields})

    async def on_start(self) -> None:
        await super().on_start()
        settings = self.kinfer_settings
        self._starting = "creating the topics, then joining the consumer group"
        await ensure_topics(
            settings.bootstrap_servers,
            declared_topics(settings),
            security=self.kafka_security,
            replication_factor=settings.replication_factor,
        )
        self.pipeline = RequestPipeline(
            models=self.models,
            publisher=FaustPublisher(self),
            default_topic=settings.response_topic,
            dead_letter_topic=settings.dead_letter_topic,
            max_answer_bytes=settings.max_answer_bytes,
            limits=request_limits(settings),
            reply_to=ReplyToPolicy.from_settings(settings),
            observer=self.metrics,
        )
        self.route_topics = await start_routes(self, settings.enrich_routes)
        if settings.model_watch_interval_s > 0 and self.manager.uses_repository:
            self._model_watch = asyncio.create_task(
                self.manager.watch(settings.model_watch_interval_s), name="kinfer-model-watch"
            )
        reload_on_sighup(self)
        self._topic_watch = asyncio.create_task(
            watch_topics(
                settings,
                self.kafka_security,
                {**declared_topics(settings), **self.route_topics},
                lambda: self.consumer,
            ),
            name="kinfer-topic-watch",
        )
        self._lag_watch = asyncio.create_task(
            watch_lag(lambda: self.consumer, settings.request_topic, self.lag),
            name="kinfer-lag-watch",
        )
        if self._startup_web is not None:  # Faust's web server takes the port over next
            await self._startup_web.stop()

    # --- health ---------------------------------------------------------------------------
    def failure(self) -> str | None:
        """Why the worker cannot serve any more, or None while it can."""
        for reason in (
            self._failure,
            self.models.failure(),
            getattr(self.pipeline, "failure", None),
            *(enricher.failure for enricher in self.enrichers.values()),
        ):
            if reason is not None:
                return str(reason)
        return None

    def fail(self, reason: str) -> None:
        """Declare the worker unhealthy: /live fails, and the agent takes nothing more."""
        if self._failure is None:
            self._failure = reason
            log.error("the worker is unhealthy: %s", reason)
        self.ready = False

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the worker is live, and why not."""
        failure = self.failure()
        if failure is not None:
            return False, {"reason": failure}
        stalled = self.models.stalled_s()
        limit = self.kinfer_settings.liveness_timeout_s
        if stalled > limit:
            return False, {
                "reason": f"a model call has run for {stalled:.0f}s, over "
                f"KINFER_LIVENESS_TIMEOUT_S={limit:g}"
            }
        return True, {}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the worker is ready, and why not."""
        if self.stopping:
            return False, {"reason": "stopping"}
        live, detail = self.liveness()
        if not live:
            return False, detail
        if not self.ready:
            return False, {"reason": "warming up, or waiting for its partition assignment"}
        stalled = self.lag.stalled(self.kinfer_settings.consumer_stall_timeout_s, time.time())
        if stalled is not None:
            return False, {"reason": f"the consumer is stalled: {stalled}"}
        return True, {}

    def is_ready(self) -> bool:
        """Warm, live, not stopping, a member of the group with its assignment, not stalled."""
        return self.readiness()[0]

    def on_rebalance_start(self) -> None:
        super().on_rebalance_start()
        self.ready = False  # until the new assignment arrives

    async def on_stop(self) -> None:
        self.stopping = True
        self.ready = False
        if self._startup_web is not None:
            await self._startup_web.stop()
        for task in (self._topic_watch, self._model_watch, self._lag_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        bound = self.kinfer_settings.shutdown_timeout_s + SHUTDOWN_GRACE_S
        self._watchdog = threading.Timer(bound, _exit_hard, args=(bound,))
        self._watchdog.daemon = True
        self._watchdog.start()
        await super().on_stop()

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        # Called on stop and on every rebalance, bounded either way. Not Faust's wait_empty: it
        # waits, with no bound, for every message the stream took, also one whose handler
        # raised (never acked), and swallows the cancellation a timeout would send it.
        if self.stopping:
            what, timeout, setting = (
                "graceful stop",
                self.kinfer_settings.shutdown_timeout_s,
                "KINFER_SHUTDOWN_TIMEOUT_S",
            )
        else:
            what, timeout, setting = "rebalance", REBALANCE_WAIT_S, "REBALANCE_WAIT_S"
        started = time.monotonic()
        pending = {task for task in self.handler_tasks if not task.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=timeout)
        if pending:
            log.warning(
                "%s: %d requests still unanswered after %.1fs (%s): left uncommitted",
                what,
                len(pending),
                timeout,
                setting,
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        else:
            log.info(
                "%s: every started request answered in %.2fs", what, time.monotonic() - started
            )
        # Commits the acked offsets; a message taken but not answered stays uncommitted.
        with contextlib.suppress(Exception):
            await consumer.commit()

    async def _mark_ready(self, sender: object, assigned: object, **kwargs: object) -> None:
        # ready once warm (on_first_start) and a member of the group with its assignment
        self.ready = not self.stopping and self.failure() is None
        log.info("partitions assigned: %s", _partitions(assigned) or "none")

    async def on_shutdown(self) -> None:
        # The consumer has already waited for every started request to be answered and acked.
        self.ready = False
        # stops every batcher, then joins the models' threads off this loop (they may be
        # finishing a model call)
        await self.manager.close()
        await super().on_shutdown()
        if self._watchdog is not None:  # stopped in time: an app living on (tests) must not exit
            self._watchdog.cancel()
            self._watchdog = None


def create_app(settings: Settings | None = None) -> KinferApp:
    """Build the worker's Faust app from ``settings`` (default: the environment)."""
    settings = settings or get_settings()
    apply_accelerator_env(settings)  # before the model's first JAX use (XLA_* variables)
    security = kafka_security(settings)
    app = KinferApp(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=security.faust_credentials(),
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        stream_buffer_maxsize=max(64, settings.max_in_flight),
        broker_commit_interval=1.0,
        broker_rebalance_timeout=REBALANCE_TIMEOUT_S,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        # the producer refuses (for good) what a default broker would: see KINFER_MAX_ANSWER_BYTES
        producer_max_request_size=settings.max_answer_bytes,
        consumer_max_fetch_size=max(settings.max_message_bytes * 4, 4_194_304),
    )
    app.kinfer_settings = settings
    app.kafka_security = security
    app.transport.Consumer = consumer_class(settings.fetch_max_wait_ms)  # type: ignore[misc]
    app.in_flight = InFlightLimit(settings.max_in_flight, settings.max_in_flight_tokens)
    app.models = ModelTable()
    app.manager = ModelManager(settings, app.models)
    app.metrics = WorkerMetrics()
    app.lag = LagTracker()
    app.manager.batch_observer = app.metrics.batch_observer
    app.metrics.watch(in_flight=app.in_flight, lag=app.lag, models=app.models, ready=app.is_ready)
    app.handler_tasks = set()
    app.enrichers = {}
    app.route_topics = {}
    app.on_partitions_assigned.connect(app._mark_ready)  # type: ignore[arg-type]
    register_agent(app, settings)
    register_enrich_agents(app, settings.enrich_routes)
    register_pages(app)
    return app


def _partitions(assigned: object) -> str:
    """``topic [0, 1], other [3]``: a set of Faust TPs for a log line."""
    by_topic: dict[str, list[int]] = {}
    for tp in assigned if isinstance(assigned, set | frozenset) else ():
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return ", ".join(f"{topic} {sorted(parts)}" for topic, parts in sorted(by_topic.items()))


def _exit_hard(bound: float) -> None:
    log.error("graceful stop overran %.1fs: exiting hard", bound)
    logging.shutdown()
    os._exit(EXIT_SHUTDOWN_OVERRUN)


def __getattr__(name: str) -> KinferApp:
    # ``faust -A streams.app worker`` looks up ``app`` here; built on first use so that importing
    # this module (as the kinfer CLI does) creates no app from the environment.
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)


app: KinferApp
