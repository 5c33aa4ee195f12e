"""MiniLM: shapes, unit norm, padding invariance and parity with sentence-transformers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.minilm.preprocess import MiniLMTokenizer
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


@cache
def build_tokenizer() -> MiniLMTokenizer:
    return MiniLMTokenizer(weights_dir() / "tokenizer.json")


def test_output_shape_and_dtype(runner: ModelRunner) -> None:
    out, timing = runner.infer(["one", "two words", "three little words"])
    assert out.shape == (3, 384)
    assert out.dtype == np.float32
    assert timing.padded_shapes == ((1, 32),)  # three short texts packed into one row


def test_embeddings_have_unit_norm(runner: ModelRunner) -> None:
    out, _ = runner.infer(["", " ", "short", "a longer sentence about streams " * 20])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_an_embedding_does_not_depend_on_its_neighbours_in_a_packed_row(
    runner: ModelRunner, parity: dict[str, Any]
) -> None:
    texts = [case["text"] for case in parity["cases"]]
    alone = np.stack([runner.infer([text])[0][0] for text in texts])
    rng = np.random.default_rng(3)
    for _ in range(3):  # each text beside different neighbours, in different rows and slots
        order = rng.permutation(len(texts))
        mixed, timing = runner.infer([texts[i] for i in order])
        assert any(rows > 1 or length > 32 for rows, length in timing.padded_shapes)
        np.testing.assert_allclose(mixed, alone[order], atol=2e-6)


def test_an_all_padding_slot_pools_to_zero_not_nan(servable: MiniLMServable) -> None:
    forward = jax.jit(servable.apply, static_argnums=4)
    ids = np.zeros((1, 16), np.int32)
    segments = np.zeros((1, 16), np.int32)
    ids[0, :3], segments[0, :3] = [101, 7592, 102], 1
    positions = np.cumsum(segments, axis=1, dtype=np.int32) - 1
    out = np.asarray(forward(servable.params, ids, segments, np.maximum(positions, 0), 8))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out[0]), 1.0, atol=1e-5)
    assert not out[1:].any()


def test_tokens_match_sentence_transformers(
    servable: MiniLMServable, parity: dict[str, Any]
) -> None:
    cases = parity["cases"]
    lengths = servable.tokenize([case["text"] for case in cases], 256).lengths
    assert lengths.tolist() == [case["tokens"] for case in cases]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=120), max_size=12))
def test_the_fast_tokeniser_path_gives_the_library_ids(texts: list[str]) -> None:
    tokenizer = build_tokenizer()
    fast, library = tokenizer(texts), tokenizer(texts, fast=False)
    assert fast.lengths.tolist() == library.lengths.tolist()
    assert fast.ids.tolist() == library.ids.tolist()


def test_the_fast_tokeniser_path_gives_the_library_ids_on_the_fixture(
    parity: dict[str, Any],
) -> None:
    tokenizer = build_tokenizer()
    assert tokenizer.has_fast_path
    texts = [case["text"] for case in parity["cases"]]
    texts += ["Supercalifragilistic tokenisation of kafkaesque JAXification!", "x" * 150]
    for limit in (256, 16):
        fast, library = tokenizer(texts, limit), tokenizer(texts, limit, fast=False)
        assert fast.lengths.tolist() == library.lengths.tolist()
        assert fast.ids.tolist() == library.ids.tolist()


def test_parity_with_sentence_transformers(runner: ModelRunner, parity: dict[str, Any]) -> None:
    cases = parity["cases"]
    assert len(cases) >= 50
    expected = np.asarray([case["embedding"] for case in cases], dtype=np.float32)
    out, timing = runner.infer([case["text"] for case in cases])  # packed beside each other
    assert timing.padding_efficiency > 0.8
    cosine = np.sum(out * expected, axis=1) / np.linalg.norm(expected, axis=1)
    worst = int(np.argmin(cosine))
    assert cosine[worst] >= MIN_COSINE, f"case {worst} {cases[worst]['text'][:40]!r}"


def test_version_names_the_weights_package(runner: ModelRunner) -> None:
    assert runner.name == "minilm"
    assert runner.version.startswith("all-MiniLM-L6-v2@")
    assert (weights_dir() / "model.safetensors").is_file()
