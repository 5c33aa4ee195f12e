"""The batcher's failure isolation under a systemic failure, its error messages, and stalls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from models.errors import RunnerClosedError
from streams.batch_model import UnpreparedModel
from streams.batching import SYSTEMIC_AFTER_FAILED_BATCHES, MicroBatcher
from streams.errors import InternalError, WorkerUnhealthy, is_systemic

pytestmark = pytest.mark.timeout(30)


class BrokenModel(UnpreparedModel):
    """Raises ``error`` on every call (or only on batches holding ``poison``)."""

    def __init__(self, error: Exception, poison: str | None = None) -> None:
        self.error = error
        self.poison = poison
        self.calls = 0

    async def infer_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
        self.calls += 1
        if self.poison is None or self.poison in texts:
            raise self.error
        return np.ones((len(texts), 1), np.float32), {"compute_ms": 0.1}


async def submit_all(batcher: MicroBatcher, jobs: Sequence[Sequence[str]]) -> list[object]:
    return list(await asyncio.gather(*(batcher.submit(j) for j in jobs), return_exceptions=True))


@pytest.mark.parametrize(
    "error",
    [
        RunnerClosedError("minilm"),
        MemoryError(),
        RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.2GiB"),
    ],
    ids=["runner-closed", "memory", "device-oom"],
)
async def test_a_systemic_failure_is_not_bisected_and_nothing_is_answered(
    error: Exception,
) -> None:
    model = BrokenModel(error)
    batcher = MicroBatcher(model, max_batch=16, max_wait_s=0.05)
    batcher.start()
    try:
        jobs = [["a", "b"], ["c", "d", "e"], ["f"], ["g", "h"]]
        results = await submit_all(batcher, jobs)
        assert model.calls == 1  # one failing call, not 2n-1 calls of bisection
        assert all(isinstance(result, WorkerUnhealthy) for result in results)
        assert batcher.failure is not None
        with pytest.raises(WorkerUnhealthy):  # and it takes nothing more
            await batcher.submit(["later"])
        assert model.calls == 1
    finally:
        await batcher.stop()


async def test_batches_failing_on_every_input_in_a_row_make_it_systemic() -> None:
    model = BrokenModel(ValueError("a failure not marked systemic"))
    batcher = MicroBatcher(model, max_batch=2, max_wait_s=0.0)
    batcher.start()
    try:
        results = [await submit_all(batcher, [["a", "b"]]) for _ in range(4)]
    finally:
        await batcher.stop()
    # the first batches are bisected and answered INTERNAL ...
    for result in results[: SYSTEMIC_AFTER_FAILED_BATCHES - 1]:
        assert isinstance(result[0], InternalError)
    # ... until the model is deemed broken: from then on nothing is answered
    assert isinstance(results[-1][0], WorkerUnhealthy)
    assert batcher.failure is not None
    assert "in a row" in batcher.failure


async def test_a_poisoned_input_is_still_isolated_and_the_batcher_stays_healthy() -> None:
    model = BrokenModel(FloatingPointError("NaN"), poison="bad")
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.0)
    batcher.start()
    try:
        for _ in range(SYSTEMIC_AFTER_FAILED_BATCHES + 1):
            results = await submit_all(batcher, [["ok", "bad", "fine"]])
            assert isinstance(results[0], InternalError)
        alone = await submit_all(batcher, [["bad"]] * (SYSTEMIC_AFTER_FAILED_BATCHES - 1))
        assert all(isinstance(result, InternalError) for result in alone)
        assert batcher.failure is None  # a batch with a good input in it is not systemic
    finally:
        await batcher.stop()


async def test_internal_error_names_a_reference_never_the_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = BrokenModel(ValueError("secret detail /srv/weights"), poison="bad")
    batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.0)
    batcher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="streams.batching"):
            [result] = await submit_all(batcher, [["good", "bad"]])
    finally:
        await batcher.stop()
    assert isinstance(result, InternalError)
    assert "secret" not in result.message
    assert "ValueError" not in result.message
    assert "inputs[1]" in result.message
    assert result.reference is not None
    assert result.reference in result.message
    logged = [r.getMessage() for r in caplog.records if result.reference in r.getMessage()]
    assert logged
    assert "secret detail" in logged[0]


async def test_stalled_s_measures_a_model_call_that_does_not_return() -> None:
    gate = asyncio.Event()

    class Hung(UnpreparedModel):
        async def infer_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
            await gate.wait()
            return np.ones((len(texts), 1), np.float32), {}

    batcher = MicroBatcher(Hung(), max_batch=4, max_wait_s=0.0)
    batcher.start()
    try:
        assert batcher.stalled_s() == 0.0
        job = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.sleep(0.3)
        assert batcher.stalled_s() > 0.0
        gate.set()
        await asyncio.wait_for(job, 5)
        assert batcher.stalled_s() == 0.0
    finally:
        await batcher.stop()


@pytest.mark.parametrize(
    ("error", "systemic"),
    [
        (RunnerClosedError("m"), True),
        (MemoryError(), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("RESOURCE_EXHAUSTED: ..."), True),
        (FloatingPointError("NaN in layer 3"), False),
        (ValueError("bad input"), False),
    ],
)
def test_is_systemic(error: Exception, systemic: bool) -> None:
    assert is_systemic(error) is systemic
