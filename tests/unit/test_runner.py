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
from hypothesis import given
from hypothesis import strategies as st

from models.bucketing import pad_chunk, plan_chunks, seq_bucket, split_batch
from models.errors import InvalidRunnerConfigError, RunnerClosedError, ShapeNotCompiledError
from models.runner import ModelRunner, RunnerConfig
from models.servable import Tokenized

CONFIG = RunnerConfig(batch_buckets=(1, 8), seq_buckets=(8, 32))


class FakeServable:
    """Token i of a text is ord(char) + 1; output row = (token count, first token, id sum)."""

    name = "fake"
    version = "fake@0"
    output_dim = 3
    max_seq_len = 32
    pad_id = 0

    def __init__(self) -> None:
        self.params = {"scale": jnp.ones((), jnp.float32)}
        self.threads: list[str] = []

    def tokenize(self, texts: Sequence[str], max_length: int) -> Tokenized:
        self.threads.append(threading.current_thread().name)
        ids = tuple(
            np.asarray([ord(c) + 1 for c in text][:max_length] or [1], np.int32) for text in texts
        )
        masks = tuple(np.ones_like(row) for row in ids)
        lengths = np.asarray([row.shape[0] for row in ids], np.int32)
        return Tokenized(ids=ids, attention_masks=masks, lengths=lengths)

    def apply(self, params: Any, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        kept = input_ids * attention_mask
        rows = [attention_mask.sum(1), input_ids[:, 0], kept.sum(1)]
        out: jax.Array = jnp.stack(rows, axis=1).astype(jnp.float32) * params["scale"]
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


def test_plan_groups_by_length_and_keeps_short_texts_short() -> None:
    chunks = plan_chunks([30, 3, 100, 5, 31], (1, 8), (8, 32, 128), call_cost=1.0)
    assert [(c.indices, c.batch, c.seq) for c in chunks] == [
        ((1,), 1, 8),
        ((3,), 1, 8),
        ((0,), 1, 32),
        ((4,), 1, 32),
        ((2,), 1, 128),
    ]
    costly = plan_chunks([30, 3, 100, 5, 31], (1, 8), (8, 32, 128), call_cost=100.0)
    assert [(c.indices, c.batch, c.seq) for c in costly] == [
        ((1, 3), 8, 8),
        ((0, 4), 8, 32),
        ((2,), 1, 128),
    ]


@given(st.lists(st.integers(min_value=1, max_value=128), max_size=80))
def test_plan_covers_every_input_once_in_bucketed_shapes(lengths: list[int]) -> None:
    chunks = plan_chunks(lengths, (1, 4, 16), (16, 64, 128))
    seen = sorted(i for chunk in chunks for i in chunk.indices)
    assert seen == list(range(len(lengths)))
    for chunk in chunks:
        assert chunk.batch in (1, 4, 16)
        assert chunk.seq in (16, 64, 128)
        assert 0 < len(chunk.indices) <= chunk.batch
        assert all(lengths[i] <= chunk.seq for i in chunk.indices)


def test_pad_chunk_right_pads_ids_and_mask() -> None:
    ids, mask = pad_chunk([np.array([5, 6, 7]), np.array([9])], batch=4, seq=5, pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 0, 0], [9, 0, 0, 0, 0], [0] * 5, [0] * 5]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0] * 5, [0] * 5]
    assert ids.dtype == mask.dtype == np.int32


def test_pad_chunk_rejects_rows_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="more than seq 2"):
        pad_chunk([np.array([1, 2, 3])], batch=1, seq=2, pad_id=0)


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


def test_texts_longer_than_the_largest_bucket_are_truncated(runner: ModelRunner) -> None:
    out, timing = runner.infer(["z" * 100])
    assert out.tolist() == [expected_row("z" * 100, limit=32)]
    assert timing.padded_shapes == ((1, 32),)


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
    with pytest.raises(ShapeNotCompiledError, match=r"\(batch=3, seq=8\) was not compiled"):
        runner.forward(np.zeros((3, 8), np.int32), np.ones((3, 8), np.int32))


def test_forward_runs_a_padded_bucket(runner: ModelRunner) -> None:
    ids, mask = pad_chunk([np.array([5, 6]), np.array([9])], batch=8, seq=8, pad_id=0)
    out = np.asarray(runner.forward(ids, mask))
    assert out[:2].tolist() == [[2, 5, 11], [1, 9, 9]]
    assert runner.compile_shape(8, 8) == 0.0


def test_before_warm_up_shapes_compile_on_first_use() -> None:
    with ModelRunner(FakeServable(), CONFIG) as lazy:
        lazy.infer(["abc"])
        assert lazy.compiled_shapes == {(1, 8)}


async def test_infer_async_runs_on_one_compute_thread() -> None:
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
    assert servable.threads[0].startswith("fake-compute")


async def test_closed_runner_refuses_work() -> None:
    model = ModelRunner(FakeServable(), CONFIG)
    model.close()
    model.close()  # idempotent
    with pytest.raises(RunnerClosedError, match="'fake' is closed"):
        model.infer(["a"])
    with pytest.raises(RunnerClosedError):
        await model.infer_async(["a"])
