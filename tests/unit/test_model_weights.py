"""MiniLM config and weight loading on a tiny model: shapes, and errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from models.errors import MissingTensorError, TensorShapeError, WeightsError
from models.minilm.config import MiniLMConfig
from models.minilm.model import MiniLM
from models.minilm.weights import load_weights, tensor_map

TINY = MiniLMConfig(
    vocab_size=20,
    hidden_size=8,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=16,
    max_position_embeddings=12,
)


def _tensors(model: MiniLM) -> dict[str, np.ndarray]:
    """Hugging Face layout tensors (linear weights as (out, in)) of random values."""
    rng = np.random.default_rng(0)
    tensors = {}
    for name, param, transform in tensor_map(model):
        shape = transform(np.zeros(param[...].shape)).shape
        tensors[name] = rng.standard_normal(shape).astype(np.float32)
    tensors["pooler.dense.weight"] = np.zeros((8, 8), np.float32)  # present and ignored
    return tensors


def _forward(model: MiniLM, segments: jnp.ndarray, per_row: int) -> jnp.ndarray:
    """One jitted call (one compile, not one per op); positions restart in each segment."""
    starts = jnp.concatenate([jnp.ones_like(segments[:, :1]), jnp.diff(segments, axis=1)], 1)
    index = jnp.arange(segments.shape[1])[None, :]
    first = jnp.where(starts != 0, index, 0)
    positions = index - jnp.maximum.accumulate(first, axis=1)
    ids = jnp.ones_like(segments) + segments
    return nnx.jit(lambda m, i, s, p: m(i, s, p, per_row))(model, ids, segments, positions)


def test_tiny_model_shapes() -> None:
    model = MiniLM(TINY, rngs=nnx.Rngs(0))
    segments = jnp.asarray([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 2, 2, 2]], jnp.int32)
    out = _forward(model, segments, per_row=2)
    assert out.shape == (6, 8)  # rows x segments per row
    present = np.asarray([0, 2, 4, 5])
    np.testing.assert_allclose(np.linalg.norm(out[present], axis=1), 1.0, atol=1e-5)
    assert not np.asarray(out)[[1, 3]].any()  # absent segments are zero rows


def test_bfloat16_compute_keeps_float32_params_and_output() -> None:
    model = MiniLM(TINY, dtype=jnp.dtype("bfloat16"), rngs=nnx.Rngs(0))
    out = _forward(model, jnp.ones((2, 4), jnp.int32), per_row=1)
    assert out.dtype == jnp.float32
    assert model.layers[0].intermediate.kernel[...].dtype == jnp.float32


def test_load_weights_copies_and_transposes(tmp_path: Path) -> None:
    model = MiniLM(TINY, rngs=nnx.Rngs(0))
    tensors = _tensors(model)
    save_file(tensors, str(tmp_path / "w.safetensors"))
    load_weights(model, tmp_path / "w.safetensors")
    kernel = np.asarray(model.layers[1].intermediate.kernel[...])
    np.testing.assert_array_equal(kernel, tensors["encoder.layer.1.intermediate.dense.weight"].T)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    model = MiniLM(TINY, rngs=nnx.Rngs(0))
    tensors = _tensors(model)
    del tensors["encoder.layer.1.attention.self.key.bias"]
    save_file(tensors, str(tmp_path / "w.safetensors"))
    with pytest.raises(MissingTensorError, match=r"encoder\.layer\.1\.attention\.self\.key\.bias"):
        load_weights(model, tmp_path / "w.safetensors")


def test_wrong_shape_is_reported(tmp_path: Path) -> None:
    model = MiniLM(TINY, rngs=nnx.Rngs(0))
    tensors = _tensors(model)
    tensors["embeddings.word_embeddings.weight"] = np.zeros((21, 8), np.float32)
    save_file(tensors, str(tmp_path / "w.safetensors"))
    with pytest.raises(TensorShapeError, match=r"shape \(21, 8\).*expects \(20, 8\)") as info:
        load_weights(model, tmp_path / "w.safetensors")
    assert isinstance(info.value, WeightsError)


def test_config_reads_hugging_face_json(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 8, "num_attention_heads": 2, "model_type": "bert"}))
    cfg = MiniLMConfig.from_json(path)
    assert (cfg.hidden_size, cfg.head_dim, cfg.layer_norm_eps) == (8, 4, 1e-12)


def test_config_rejects_other_activations(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_act": "relu"}))
    with pytest.raises(ValueError, match="hidden_act"):
        MiniLMConfig.from_json(path)
