"""The model registry."""

from __future__ import annotations

import pytest

from models.errors import ModelError, UnknownModelError
from models.registry import KNOWN_MODELS, load
from models.runner import RunnerConfig


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model 'bert-huge'; known models: minilm"):
        load("bert-huge")


def test_unknown_model_error_carries_its_arguments() -> None:
    error = UnknownModelError("x", ["b", "a"])
    assert (error.name, error.known) == ("x", ("a", "b"))
    assert isinstance(error, ModelError)
    assert isinstance(error, LookupError)
    assert not error.retriable


def test_known_models_is_read_only() -> None:
    assert "minilm" in KNOWN_MODELS
    with pytest.raises(TypeError):
        KNOWN_MODELS["other"] = KNOWN_MODELS["minilm"]  # type: ignore[index]


def test_load_minilm_without_warming_up() -> None:
    runner = load("minilm", config=RunnerConfig(batch_buckets=(1,), seq_buckets=(32,)))
    try:
        assert (runner.name, runner.output_dim) == ("minilm", 384)
        assert runner.version.startswith("all-MiniLM-L6-v2@")
        assert not runner.compiled_shapes
    finally:
        runner.close()
