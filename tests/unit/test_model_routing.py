"""Routing between served models: defaults, pinning, draining, and a stuck model's isolation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence

import numpy as np
import orjson
import pytest

from streams.batch_model import FunctionModel
from streams.batching import MicroBatcher
from streams.contract import Limits
from streams.errors import UnknownModel
from streams.model_table import ModelTable, ServedVersion
from streams.pipeline import RequestPipeline
from tests.support.models import served_text
from tests.unit.test_pipeline import FakePublisher, inbound

pytestmark = pytest.mark.timeout(30)


class Gate:
    """A model whose calls wait for ``opened``; rows are the texts' lengths."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.entered = asyncio.Event()
        self.calls = 0

    async def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
        self.calls += 1
        self.entered.set()
        await self.opened.wait()
        return np.array([[float(len(t))] for t in texts], np.float32), {}


async def instant(texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
    return np.array([[float(len(t))] for t in texts], np.float32), {}


@pytest.fixture
async def batchers() -> AsyncIterator[list[MicroBatcher]]:
    made: list[MicroBatcher] = []
    yield made
    for batcher in made:
        await batcher.stop()


def started(batchers: list[MicroBatcher], infer: object) -> MicroBatcher:
    batcher = MicroBatcher(FunctionModel(infer), max_batch=8, max_wait_s=0.001)  # type: ignore[arg-type]
    batcher.start()
    batchers.append(batcher)
    return batcher


def version(
    batchers: list[MicroBatcher], name: str, number: str, aliases: tuple[str, ...] = ()
) -> ServedVersion:
    served = served_text(started(batchers, instant), name, number)
    served.status.aliases = aliases
    return served


def request(rid: str, model: str, version: str | None = None) -> bytes:
    doc: dict[str, object] = {"id": rid, "model": model, "inputs": [rid]}
    if version is not None:
        doc["version"] = version
    return orjson.dumps(doc)


async def test_a_stuck_model_never_holds_another_models_answers(
    batchers: list[MicroBatcher],
) -> None:
    gate = Gate()
    table = ModelTable()
    table.add(served_text(started(batchers, gate), "slow", "1"))
    table.add(served_text(started(batchers, instant), "fast", "1"))
    publisher = FakePublisher()
    pipeline = RequestPipeline(
        models=table,
        publisher=publisher,
        default_topic="responses",
        dead_letter_topic="requests.dlq",
        limits=Limits(),
    )
    # one partition: the slow model's request first, the fast model's after it
    values = [request("s0", "slow")] + [request(f"f{i}", "fast") for i in range(1, 6)]
    prepared = [pipeline.prepare(inbound(v, offset=i)) for i, v in enumerate(values)]
    slow = asyncio.ensure_future(pipeline.handle(prepared[0]))
    await asyncio.wait_for(gate.entered.wait(), 5)  # the slow model holds s0 from here on
    await asyncio.wait_for(asyncio.gather(*(pipeline.handle(p) for p in prepared[1:])), 5)
    answered = [orjson.loads(r[2])["id"] for r in publisher.records]
    assert answered == ["f1", "f2", "f3", "f4", "f5"], "fast answered while slow is held"
    assert gate.calls == 1
    assert not slow.done()
    gate.opened.set()
    await asyncio.wait_for(slow, 5)
    assert orjson.loads(publisher.records[-1][2])["id"] == "s0"


async def test_one_models_answers_keep_their_partitions_order(
    batchers: list[MicroBatcher],
) -> None:
    gate = Gate()
    table = ModelTable()
    table.add(served_text(started(batchers, gate), "slow", "1"))
    publisher = FakePublisher()
    pipeline = RequestPipeline(
        models=table,
        publisher=publisher,
        default_topic="responses",
        dead_letter_topic="requests.dlq",
        limits=Limits(),
    )
    values = [request("a", "slow"), b"not json", request("b", "slow")]
    prepared = [pipeline.prepare(inbound(v, offset=i)) for i, v in enumerate(values)]
    handled = asyncio.ensure_future(
        asyncio.gather(*(pipeline.handle(p) for p in reversed(prepared)))
    )
    await asyncio.sleep(0.05)
    assert publisher.records == [], "the error waits for the earlier held answer"
    gate.opened.set()
    await asyncio.wait_for(handled, 5)
    ids = [orjson.loads(r[2])["id"] for r in publisher.records if r[0] == "responses"]
    assert ids == ["a", None, "b"]


async def test_default_is_the_aliased_version_else_the_newest(
    batchers: list[MicroBatcher],
) -> None:
    table = ModelTable()
    table.add(version(batchers, "m", "9"))
    table.add(version(batchers, "m", "10"))
    assert table.resolve("m", None).version == "10", "10 is newer than 9"
    table.add(version(batchers, "m", "2", aliases=("default",)))
    assert table.resolve("m", None).version == "2"
    assert table.resolve("m", "9").version == "9", "a version pins"
    assert [s.default for s in table.describe()] == [False, True, False]
    with pytest.raises(UnknownModel, match=r"served: m \(10, 2, 9\)"):
        table.resolve("m", "3")
    with pytest.raises(UnknownModel, match="model other is not served"):
        table.resolve("other", None)


async def test_a_retired_version_leaves_routing_and_drains_what_it_holds(
    batchers: list[MicroBatcher],
) -> None:
    table = ModelTable()
    old = version(batchers, "m", "1")
    table.add(old)
    table.add(version(batchers, "m", "2"))
    old.hold()
    assert table.retire(("m", "1")) is old
    assert old.status.state == "draining"
    assert table.resolve("m", None).version == "2"
    with pytest.raises(UnknownModel):
        table.resolve("m", "1")
    drained = asyncio.ensure_future(old.drained())
    await asyncio.sleep(0.01)
    assert not drained.done(), "it still holds a request"
    old.release()
    await asyncio.wait_for(drained, 1)
    assert [(s.version, s.state) for s in table.describe()] == [("1", "draining"), ("2", "ready")]
    table.forget(("m", "1"))
    assert [s.version for s in table.describe()] == ["2"]
