"""The worker app's health and bounds without a broker: /live, /ready, the rebalance wait, the
consumer-thread metadata refresh and closing the runner off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from streams import app as app_module
from streams.batch_model import UnpreparedModel
from streams.batching import MicroBatcher
from streams.broker import free_port
from streams.settings import Settings
from streams.topic_watch import refresh_consumer_metadata
from tests.support.models import served_text

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app(unique_name: Callable[[str], str]) -> app_module.KinferApp:
    settings = Settings(
        app_id=unique_name("app"),
        web_port=free_port(),
        liveness_timeout_s=0.3,
    )
    return app_module.create_app(settings)


class Hung(UnpreparedModel):
    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def infer_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
        await self.gate.wait()
        return np.ones((len(texts), 1), np.float32), {}


async def test_live_fails_while_a_model_call_hangs_and_recovers_after(
    app: app_module.KinferApp,
) -> None:
    model = Hung()
    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.0)
    batcher.start()
    app.models.add(served_text(batcher))
    app.ready = True
    try:
        assert app.liveness() == (True, {})
        job = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.sleep(0.6)  # past liveness_timeout_s
        live, detail = app.liveness()
        assert not live
        assert "KINFER_LIVENESS_TIMEOUT_S" in detail["reason"]
        assert not app.is_ready()
        model.gate.set()
        await asyncio.wait_for(job, 5)
        assert app.liveness()[0]
        assert app.is_ready()
    finally:
        await batcher.stop()


async def test_live_fails_for_good_once_the_worker_is_unhealthy(
    app: app_module.KinferApp,
) -> None:
    app.ready = True
    app.fail("the model failed: MemoryError()")
    live, detail = app.liveness()
    assert not live
    assert "MemoryError" in detail["reason"]
    assert not app.is_ready()
    await app._mark_ready(app, set())  # a later assignment does not make it ready again
    assert not app.is_ready()


async def test_ready_is_cleared_when_a_rebalance_starts_and_set_on_assignment(
    app: app_module.KinferApp,
) -> None:
    await app._mark_ready(app, set())
    assert app.is_ready()
    app.on_rebalance_start()
    assert not app.is_ready()
    await app._mark_ready(app, set())
    assert app.is_ready()


class StuckConsumer:
    """Faust's consumer as the rebalance sees it; its own wait_empty never returns (an event
    whose handler raised is never acked)."""

    def __init__(self) -> None:
        self.commits = 0

    async def wait_empty(self) -> None:
        await asyncio.get_running_loop().create_future()

    async def commit(self) -> bool:
        self.commits += 1
        return True


async def test_a_rebalance_waits_for_started_requests_only_within_its_bound(
    app: app_module.KinferApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "REBALANCE_WAIT_S", 0.2)
    never = asyncio.ensure_future(asyncio.get_running_loop().create_future())
    quick = asyncio.ensure_future(asyncio.sleep(0.01))
    app.handler_tasks.update({never, quick})
    consumer = StuckConsumer()
    await asyncio.wait_for(app._consumer_wait_empty(consumer, app.log), 5)
    assert never.cancelled()  # left uncommitted: Faust seeks back to the committed offset
    assert quick.done()
    assert not quick.cancelled()
    assert consumer.commits == 1


class ConsumerThread:
    """Faust's consumer thread: its own event loop, methods run there through call_thread."""

    def __init__(self, client: Any) -> None:
        self._consumer = type("AIOKafkaConsumer", (), {"_client": client})()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    async def call_thread(self, fun: Callable[[], Awaitable[Any]]) -> Any:
        future = asyncio.run_coroutine_threadsafe(fun(), self.loop)  # type: ignore[arg-type]
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class Client:
    """aiokafka's client: force_metadata_update() must run on the loop that owns it."""

    def __init__(self) -> None:
        self.loops: list[asyncio.AbstractEventLoop] = []

    def force_metadata_update(self) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()  # raises off a loop, as a sync call from elsewhere
        self.loops.append(loop)
        future: asyncio.Future[bool] = loop.create_future()
        loop.call_soon(future.set_result, True)
        return future


async def test_the_metadata_refresh_runs_on_the_consumer_threads_loop() -> None:
    client = Client()
    thread = ConsumerThread(client)
    try:
        consumer = type("FaustConsumer", (), {"_thread": thread})()
        await asyncio.wait_for(refresh_consumer_metadata(consumer), 5)
        assert client.loops == [thread.loop]
    finally:
        thread.stop()


async def test_closing_the_runner_does_not_block_the_event_loop(
    app: app_module.KinferApp,
) -> None:
    ticked = threading.Event()

    class Runner:
        closed_after_tick: bool | None = None

        def close(self) -> None:  # joins threads, as ModelRunner.close does
            Runner.closed_after_tick = ticked.wait(5)

    async def tick() -> None:
        await asyncio.sleep(0.05)
        ticked.set()

    batcher = MicroBatcher(Hung(), max_batch=4, max_wait_s=0.0)
    batcher.start()
    served = served_text(batcher)
    served.close_model = Runner().close
    app.models.add(served)
    ticker = asyncio.ensure_future(tick())
    await app.on_shutdown()
    await ticker
    assert Runner.closed_after_tick is True, "the loop was blocked while the runner closed"
