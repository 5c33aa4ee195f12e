"""Micro-batching without Kafka or a model: sizes, waits, splits, deadlines, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from streams.batch_model import UnpreparedModel
from streams.batching import MicroBatcher
from streams.errors import DeadlineExceeded, InternalError


class FakeModel(UnpreparedModel):
    """Embeds text as [len(text), first char code]; records every batch it runs."""

    def __init__(self, delay_s: float = 0.0, poison: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s
        self.poison = poison

    async def infer_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
        self.batches.append(list(texts))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.poison is not None and self.poison in texts:
            raise RuntimeError("poisoned input")
        rows = np.array([[len(t), ord(t[0]) if t else 0] for t in texts], np.float32)
        return rows, {"tokenize_ms": 1.0, "compute_ms": 2.0}


def expected(texts: Sequence[str]) -> np.ndarray:
    return np.array([[len(t), ord(t[0]) if t else 0] for t in texts], np.float32)


async def run_with(batcher: MicroBatcher, *jobs: Sequence[str]) -> list[np.ndarray]:
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(job) for job in jobs))
        return [r.outputs for r in results]
    finally:
        await batcher.stop()


async def test_gathers_concurrent_requests_into_one_batch() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.05)
    outputs = await run_with(batcher, ["a"], ["bb", "c"], ["ddd"])
    assert model.batches == [["a", "bb", "c", "ddd"]]
    np.testing.assert_array_equal(outputs[1], expected(["bb", "c"]))


async def test_batch_closes_at_max_batch_without_waiting() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch=2, max_wait_s=30.0)
    started = time.perf_counter()
    await run_with(batcher, ["a"], ["b"])
    assert time.perf_counter() - started < 5  # did not sit out the 30 s wait
    assert model.batches == [["a", "b"]]


async def test_batch_closes_after_max_wait() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch=100, max_wait_s=0.02)
    outputs = await run_with(batcher, ["only"])
    assert model.batches == [["only"]]
    np.testing.assert_array_equal(outputs[0], expected(["only"]))


async def test_large_request_is_split_over_batches_and_reassembled_in_order() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch=3, max_wait_s=0.01)
    texts = [chr(ord("a") + i) * (i + 1) for i in range(8)]
    outputs = await run_with(batcher, texts)
    assert [len(b) for b in model.batches] == [3, 3, 2]
    np.testing.assert_array_equal(outputs[0], expected(texts))


async def test_requests_fill_batches_exactly() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.05)
    await run_with(batcher, ["a", "b", "c"], ["d", "e", "f"])
    assert [len(b) for b in model.batches] == [4, 2]


async def test_expired_request_costs_no_model_time() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.01)
    batcher.start()
    try:
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(["late"], deadline=time.time() - 1)
        assert model.batches == []
    finally:
        await batcher.stop()


async def test_request_expiring_in_the_queue_is_skipped() -> None:
    model = FakeModel(delay_s=0.2)
    batcher = MicroBatcher(model, max_batch=1, max_wait_s=0.0)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(["slow"]))
        await asyncio.sleep(0.01)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(["tight"], deadline=time.time() + 0.05)
        await first
        assert ["tight"] not in model.batches
    finally:
        await batcher.stop()


async def test_batch_is_cut_early_for_the_nearest_deadline() -> None:
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch=100, max_wait_s=10.0)
    batcher.start()
    try:
        started = time.perf_counter()
        result = await batcher.submit(["urgent"], deadline=time.time() + 0.2)
        assert time.perf_counter() - started < 5.0  # not held for the 10 s max_wait
        np.testing.assert_array_equal(result.outputs, expected(["urgent"]))
    finally:
        await batcher.stop()


async def test_failing_input_is_isolated_and_the_rest_answered() -> None:
    model = FakeModel(poison="bad")
    batcher = MicroBatcher(model, max_batch=16, max_wait_s=0.05)
    batcher.start()
    try:
        jobs = [["a", "b"], ["c", "bad", "d"], ["e"], ["f", "g", "h"]]
        results = await asyncio.gather(*(batcher.submit(j) for j in jobs), return_exceptions=True)
    finally:
        await batcher.stop()
    assert isinstance(results[1], InternalError)
    assert "inputs[1]" in results[1].message
    for index in (0, 2, 3):
        result = results[index]
        assert not isinstance(result, BaseException)
        np.testing.assert_array_equal(result.outputs, expected(jobs[index]))


async def test_timing_is_reported() -> None:
    batcher = MicroBatcher(FakeModel(), max_batch=4, max_wait_s=0.0)
    batcher.start()
    try:
        result = await batcher.submit(["a", "b"])
    finally:
        await batcher.stop()
    assert result.timing["compute_ms"] == 2.0
    assert result.timing["tokenize_ms"] == 0.0  # nothing to prepare
    assert result.timing["batch_size"] == 2
    assert result.timing["queue_ms"] >= 0


async def test_stop_fails_queued_requests_instead_of_hanging() -> None:
    batcher = MicroBatcher(FakeModel(delay_s=5), max_batch=1, max_wait_s=0.0)
    batcher.start()
    running = asyncio.ensure_future(batcher.submit(["a"]))
    queued = asyncio.ensure_future(batcher.submit(["b"]))
    await asyncio.sleep(0.05)
    await batcher.stop()
    for future in (running, queued):
        with pytest.raises(InternalError):
            await future


# -- the token budget and the prepare stage ---------------------------------------------------


@dataclass(frozen=True)
class Texts:
    """Prepared texts: each costs its length (as a text costs its token count)."""

    texts: tuple[str, ...]

    @property
    def costs(self) -> np.ndarray:
        return np.array([max(1, len(t)) for t in self.texts], np.int64)

    def __len__(self) -> int:
        return len(self.texts)

    def slice(self, start: int, stop: int) -> Texts:
        return Texts(self.texts[start:stop])


class TokenModel:
    """A BatchModel that prepares texts (one call for many requests) and records batches."""

    def __init__(self, prepare_delay_s: float = 0.0, bad: str | None = None) -> None:
        self.prepare_calls: list[int] = []
        self.batches: list[list[str]] = []
        self.prepare_delay_s = prepare_delay_s
        self.bad = bad

    async def prepare(
        self, groups: Sequence[Sequence[str]]
    ) -> tuple[list[Texts], dict[str, float]]:
        self.prepare_calls.append(len(groups))
        await asyncio.sleep(self.prepare_delay_s)
        if self.bad is not None and any(self.bad in group for group in groups):
            raise UnicodeError("cannot tokenise")
        return [Texts(tuple(group)) for group in groups], {"tokenize_ms": 1.5}

    async def pack(self, parts: Sequence[Texts]) -> list[str]:
        return [text for part in parts for text in part.texts]

    async def compute(self, packed: list[str]) -> tuple[np.ndarray, dict[str, float]]:
        self.batches.append(packed)
        return expected(packed), {"compute_ms": 1.0, "real_tokens": 6.0, "computed_tokens": 8.0}


async def test_batch_closes_at_the_token_budget_and_splits_the_request_there() -> None:
    model = TokenModel()
    batcher = MicroBatcher(model, max_batch=100, max_wait_s=0.05, max_batch_tokens=10)
    texts = ["aaaa", "bbbb", "cc", "dddddd", "e", "ffff"]  # costs 4 4 2 6 1 4
    outputs = await run_with(batcher, texts)
    assert model.batches == [["aaaa", "bbbb", "cc"], ["dddddd", "e"], ["ffff"]]
    np.testing.assert_array_equal(outputs[0], expected(texts))


async def test_an_input_over_the_whole_budget_runs_alone() -> None:
    model = TokenModel()
    batcher = MicroBatcher(model, max_batch=100, max_wait_s=0.05, max_batch_tokens=5)
    outputs = await run_with(batcher, ["ab", "x" * 12, "cd"])
    assert model.batches == [["ab"], ["x" * 12], ["cd"]]
    np.testing.assert_array_equal(outputs[0], expected(["ab", "x" * 12, "cd"]))


async def test_count_limit_applies_with_a_token_budget() -> None:
    model = TokenModel()
    batcher = MicroBatcher(model, max_batch=2, max_wait_s=0.05, max_batch_tokens=1000)
    await run_with(batcher, ["a", "b", "c"])
    assert model.batches == [["a", "b"], ["c"]]


async def test_requests_waiting_together_are_prepared_in_one_call() -> None:
    model = TokenModel(prepare_delay_s=0.05)
    batcher = MicroBatcher(model, max_batch=100, max_wait_s=0.2, max_batch_tokens=1000)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(["first"]))
        await asyncio.sleep(0.01)  # the first prepare call is running now
        rest = [asyncio.ensure_future(batcher.submit([f"r{i}"])) for i in range(5)]
        results = await asyncio.gather(first, *rest)
    finally:
        await batcher.stop()
    assert model.prepare_calls == [1, 5]
    assert results[3].timing["tokenize_ms"] == 1.5
    assert results[3].timing["padding_efficiency"] == 0.75


async def test_a_request_that_cannot_be_prepared_fails_alone() -> None:
    model = TokenModel(prepare_delay_s=0.02, bad="\udcff")
    batcher = MicroBatcher(model, max_batch=100, max_wait_s=0.01, max_batch_tokens=1000)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(["warm"]))
        await asyncio.sleep(0.005)
        jobs = [["ok"], ["x", "\udcff"], ["fine"]]
        results = await asyncio.gather(
            first, *(batcher.submit(job) for job in jobs), return_exceptions=True
        )
    finally:
        await batcher.stop()
    assert isinstance(results[2], InternalError)
    assert "preparing the inputs failed" in results[2].message
    for index, job in ((1, ["ok"]), (3, ["fine"])):
        result = results[index]
        assert not isinstance(result, BaseException)
        np.testing.assert_array_equal(result.outputs, expected(job))


async def test_a_deadline_passing_while_a_packed_batch_waits_for_the_device_fails_it() -> None:
    class SlowCompute(TokenModel):
        async def compute(self, packed: list[str]) -> tuple[np.ndarray, dict[str, float]]:
            if packed == ["slow"]:
                await asyncio.sleep(0.3)
            return await super().compute(packed)

    model = SlowCompute()
    batcher = MicroBatcher(model, max_batch=1, max_wait_s=0.0, max_batch_tokens=1000)
    batcher.start()
    try:
        slow = asyncio.ensure_future(batcher.submit(["slow"]))
        await asyncio.sleep(0.02)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(["tight"], deadline=time.time() + 0.1)
        await slow
    finally:
        await batcher.stop()
    assert ["tight"] not in model.batches
