"""The agent's answer-then-ack step with fakes: what is acked, and what declares the worker
unhealthy."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from streams.agents import _answer_then_ack
from streams.errors import WorkerUnhealthy
from streams.flow import InFlightLimit

pytestmark = pytest.mark.timeout(30)


class Stream:
    def __init__(self) -> None:
        self.acked: list[Any] = []

    async def ack(self, event: Any) -> None:
        self.acked.append(event)


class App:
    def __init__(self, handle: Any) -> None:
        self.pipeline = SimpleNamespace(handle=handle)
        self.in_flight = InFlightLimit(10, token_limit=100)
        self.failures: list[str] = []

    def fail(self, reason: str) -> None:
        self.failures.append(reason)


def event(offset: int = 3) -> Any:
    return SimpleNamespace(message=SimpleNamespace(offset=offset))


async def run(handle: Any) -> tuple[App, Stream]:
    app, stream = App(handle), Stream()
    prepared = SimpleNamespace(weight=2, tokens=40)
    await app.in_flight.acquire(2, 40)
    await _answer_then_ack(app, stream, event(), prepared)  # type: ignore[arg-type]
    assert (app.in_flight.in_flight, app.in_flight.tokens_in_flight) == (0, 0)
    return app, stream


async def test_an_answered_request_is_acked() -> None:
    async def handle(prepared: Any) -> None:
        return None

    app, stream = await run(handle)
    assert len(stream.acked) == 1
    assert app.failures == []


async def test_a_handler_that_raises_leaves_it_unacked_and_the_worker_unhealthy() -> None:
    async def handle(prepared: Any) -> None:
        raise RuntimeError("a bug")

    app, stream = await run(handle)
    assert stream.acked == []
    assert len(app.failures) == 1
    assert "a bug" in app.failures[0]


async def test_an_unhealthy_worker_leaves_it_unacked_without_a_new_failure() -> None:
    async def handle(prepared: Any) -> None:
        raise WorkerUnhealthy("device lost")

    app, stream = await run(handle)
    assert stream.acked == []
    assert app.failures == []  # the batcher or pipeline recorded why already


async def test_a_cancelled_handler_is_not_acked() -> None:
    async def handle(prepared: Any) -> None:
        await asyncio.sleep(3600)

    app, stream = App(handle), Stream()
    task = asyncio.ensure_future(
        _answer_then_ack(app, stream, event(), SimpleNamespace(weight=1, tokens=0))  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.acked == []
