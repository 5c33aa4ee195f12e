"""MiniLM: shapes, unit norm, padding invariance and parity with sentence-transformers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from models.bucketing import pad_chunk
from models.minilm.servable import MiniLMServable, build, weights_dir
from models.registry import load
from models.runner import ModelRunner, RunnerConfig

FIXTURE = Path(__file__).parents[1] / "fixtures" / "minilm_parity.json"
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def parity() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def runner() -> Iterator[ModelRunner]:
    model = load("minilm", config=RunnerConfig(batch_buckets=(1, 8), seq_buckets=(32, 256)))
    model.warm_up()
    yield model
    model.close()


@pytest.fixture(scope="module")
def servable() -> MiniLMServable:
    return build()


def test_output_shape_and_dtype(runner: ModelRunner) -> None:
    out, timing = runner.infer(["one", "two words", "three little words"])
    assert out.shape == (3, 384)
    assert out.dtype == np.float32
    assert timing.padded_shapes == ((1, 32), (1, 32), (1, 32))


def test_embeddings_have_unit_norm(runner: ModelRunner) -> None:
    out, _ = runner.infer(["", " ", "short", "a longer sentence about streams " * 20])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_an_embedding(servable: MiniLMServable) -> None:
    forward = jax.jit(servable.apply)
    tokens = servable.tokenize(["Padding must not leak into the mean.", "other", "x " * 40], 256)
    alone = forward(servable.params, *pad_chunk(tokens.ids[:1], 1, tokens.ids[0].shape[0], 0))
    padded = forward(servable.params, *pad_chunk(tokens.ids, 4, 64, 0))
    np.testing.assert_allclose(np.asarray(padded)[0], np.asarray(alone)[0], atol=2e-6)
    assert not np.asarray(padded)[3].any()  # an all-padding row pools to zero, not NaN


def test_tokens_match_sentence_transformers(
    servable: MiniLMServable, parity: dict[str, Any]
) -> None:
    cases = parity["cases"]
    lengths = servable.tokenize([case["text"] for case in cases], 256).lengths
    assert lengths.tolist() == [case["tokens"] for case in cases]


def test_parity_with_sentence_transformers(runner: ModelRunner, parity: dict[str, Any]) -> None:
    cases = parity["cases"]
    assert len(cases) >= 50
    expected = np.asarray([case["embedding"] for case in cases], dtype=np.float32)
    out, _ = runner.infer([case["text"] for case in cases])
    cosine = np.sum(out * expected, axis=1) / np.linalg.norm(expected, axis=1)
    worst = int(np.argmin(cosine))
    assert cosine[worst] >= MIN_COSINE, f"case {worst} {cases[worst]['text'][:40]!r}"


def test_version_names_the_weights_package(runner: ModelRunner) -> None:
    assert runner.name == "minilm"
    assert runner.version.startswith("all-MiniLM-L6-v2@")
    assert (weights_dir() / "model.safetensors").is_file()
