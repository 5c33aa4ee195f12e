"""ModelRunner and the bucketing it relies on, with a tiny fake model so compiles are instant."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.bucketing import seq_bucket, split_batch
from models.errors import InvalidRunnerConfigError, RunnerClosedError, ShapeNotCompiledError
from models.packing import TokenBatch
from models.runner import ModelRunner, RunnerConfig

CONFIG = RunnerConfig(batch_buckets=(1, 8), seq_buckets=(8, 32))


class FakeServable:
    """Token i of a text is ord(char) + 1; output row = (token count, first token, id sum)."""

    name = "fake"
    version = "fake@0"
    output_dim = 3
    max_seq_len = 32
    pad_id = 0
    min_tokens = 1

    def __init__(self) -> None:
        self.params = {"scale": jnp.ones((), jnp.float32)}
        self.threads: list[str] = []

    def tokenize(self, texts: Sequence[str], max_length: int) -> TokenBatch:
        self.threads.append(threading.current_thread().name)
        rows = [[ord(c) + 1 for c in text][:max_length] or [1] for text in texts]
        ids = np.asarray([i for row in rows for i in row], np.int32)
        return TokenBatch(ids, np.asarray([len(row) for row in rows], np.int32))

    def apply(
        self,
        params: Any,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        position_ids: jax.Array,
        segments_per_row: int,
    ) -> jax.Array:
        numbers = jnp.arange(1, segments_per_row + 1)
        members = (segment_ids[:, None, :] == numbers[None, :, None]).astype(jnp.float32)
        ids = input_ids.astype(jnp.float32)
        first = (position_ids == 0).astype(jnp.float32) * ids
        rows = [members.sum(-1), members @ first[..., None], members @ ids[..., None]]
        flat = [rows[0][..., None], rows[1], rows[2]]
        out: jax.Array = jnp.concatenate(flat, axis=-1).reshape(-1, 3) * params["scale"]
        return out


def expected_row(text: str, limit: int = 32) -> list[float]:
    ids = [ord(c) + 1 for c in text][:limit] or [1]
    return [len(ids), ids[0], sum(ids)]


@pytest.fixture(scope="module")
def runner() -> Iterator[ModelRunner]:
    model = ModelRunner(FakeServable(), CONFIG)
    model.warm_up()
    yield model
    model.close()


# -- bucketing (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "bucket"), [(1, 32), (32, 32), (33, 64), (256, 256)])
def test_seq_bucket_is_the_smallest_that_fits(length: int, bucket: int) -> None:
    assert seq_bucket(length, (256, 32, 64)) == bucket


def test_seq_bucket_rejects_overlong() -> None:
    with pytest.raises(ValueError, match="257 tokens exceed the largest seq bucket 256"):
        seq_bucket(257, (32, 256))


@pytest.mark.parametrize(
    ("rows", "calls"),
    [
        (0, []),
        (1, [(1, 1)]),
        (3, [(4, 3)]),
        (20, [(16, 16), (4, 4)]),
        (31, [(32, 31)]),
        (70, [(32, 32), (32, 32), (4, 4), (1, 1), (1, 1)]),
    ],
)
def test_split_batch(rows: int, calls: list[tuple[int, int]]) -> None:
    assert split_batch(rows, (1, 4, 16, 32), call_cost=1.0) == calls


def test_split_batch_with_costly_calls_pads_to_the_nearest_bucket() -> None:
    assert split_batch(20, (1, 4, 16, 32), call_cost=1000.0) == [(32, 20)]


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch_buckets": ()}, "batch_buckets"),
        ({"seq_buckets": (0, 32)}, "seq_buckets"),
        ({"batch_buckets": (8, 8)}, "batch_buckets"),
        ({"dtype": "float16"}, "dtype"),
        ({"call_cost_rows": -1.0}, "call_cost_rows"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRunnerConfigError, match=f"invalid runner config {field}="):
        RunnerConfig(**kwargs)


def test_config_sorts_buckets_and_lists_shapes() -> None:
    config = RunnerConfig(batch_buckets=(8, 1), seq_buckets=(32, 8))
    assert config.batch_buckets == (1, 8)
    assert config.shapes == ((1, 8), (8, 8), (1, 32), (8, 32))


def test_seq_bucket_beyond_the_model_limit_is_refused() -> None:
    with pytest.raises(InvalidRunnerConfigError, match="fake accepts at most 32 tokens"):
        ModelRunner(FakeServable(), RunnerConfig(seq_buckets=(8, 64)))


# -- runner ----------------------------------------------------------------------------------


def test_warm_up_compiles_every_bucket_shape(runner: ModelRunner) -> None:
    assert runner.is_warm
    assert runner.compiled_shapes == set(CONFIG.shapes)


def test_rows_come_back_in_input_order(runner: ModelRunner) -> None:
    texts = ["x" * 20, "a", "long " * 10, "", "bb", "c" * 9, "d" * 8, *[f"t{i}" for i in range(9)]]
    out, timing = runner.infer(texts)
    assert out.tolist() == [expected_row(text) for text in texts]
    assert set(timing.padded_shapes) <= set(CONFIG.shapes)
    assert timing.tokenize_ms >= 0
    assert timing.compute_ms > 0
    assert timing.real_tokens == sum(len(expected_row(t)) and expected_row(t)[0] for t in texts)
    assert 0 < timing.padding_efficiency <= 1


def test_texts_longer_than_the_largest_bucket_are_truncated(runner: ModelRunner) -> None:
    out, timing = runner.infer(["z" * 100])
    assert out.tolist() == [expected_row("z" * 100, limit=32)]
    assert timing.padded_shapes == ((1, 32),)
    assert timing.padding_efficiency == 1.0


def test_empty_input(runner: ModelRunner) -> None:
    out, timing = runner.infer([])
    assert out.shape == (0, 3)
    assert out.dtype == np.float32
    assert timing.padded_shapes == ()


def test_a_single_string_is_refused(runner: ModelRunner) -> None:
    with pytest.raises(TypeError, match="not a single str"):
        runner.infer("oops")


def test_nothing_compiles_after_warm_up(runner: ModelRunner) -> None:
    compiles: list[str] = []

    def listen(event: str, duration_secs: float, **kwargs: str | int) -> None:
        if event.endswith("backend_compile_duration"):
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        for size in (1, 2, 7, 8, 9, 17):
            runner.infer([f"text number {i} " * (i % 4) for i in range(size)])
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == []


def test_an_uncompiled_shape_raises_after_warm_up(runner: ModelRunner) -> None:
    zeros = np.zeros((3, 8), np.int32)
    with pytest.raises(ShapeNotCompiledError, match=r"\(batch=3, seq=8\) was not compiled"):
        runner.forward(zeros, zeros, zeros)


def test_forward_runs_a_packed_bucket(runner: ModelRunner) -> None:
    ids = np.zeros((8, 8), np.int32)
    segments = np.zeros((8, 8), np.int32)
    positions = np.zeros((8, 8), np.int32)
    ids[0, :3], segments[0, :3], positions[0, :3] = [5, 6, 9], [1, 1, 2], [0, 1, 0]
    out = np.asarray(runner.forward(ids, segments, positions))
    assert out[:2].tolist() == [[2, 5, 11], [1, 9, 9]]  # two segments of row 0
    assert runner.compile_shape(8, 8) == 0.0


def test_before_warm_up_shapes_compile_on_first_use() -> None:
    with ModelRunner(FakeServable(), CONFIG) as lazy:
        lazy.infer(["abc"])
        assert lazy.compiled_shapes == {(1, 8)}


async def test_infer_async_tokenises_on_the_host_thread_never_the_loop() -> None:
    servable = FakeServable()
    with ModelRunner(servable, CONFIG) as model:
        model.warm_up()
        results = await asyncio.gather(*(model.infer_async(["a", "bcd" * i]) for i in range(4)))
    assert [out.tolist() for out, _ in results] == [
        [expected_row("a"), expected_row("bcd" * i)] for i in range(4)
    ]
    loop_thread = threading.current_thread().name
    assert loop_thread not in servable.threads
    assert len(set(servable.threads)) == 1
    assert servable.threads[0].startswith("fake-host")


async def test_closed_runner_refuses_work() -> None:
    model = ModelRunner(FakeServable(), CONFIG)
    model.close()
    model.close()  # idempotent
    with pytest.raises(RunnerClosedError, match="'fake' is closed"):
        model.infer(["a"])
    with pytest.raises(RunnerClosedError):
        await model.infer_async(["a"])
