"""Load Hugging Face BERT safetensors into the NNX `BertEncoder`.

Tensor names are Hugging Face's `BertModel` names; a checkpoint saved from a model with a head
(`BertForMaskedLM`, ...) prefixes them with ``bert.``, which is recognised. PyTorch stores a
linear layer's weight as (out, in); Flax's kernel is (in, out), so linear weights are
transposed. The pooler, heads and the `position_ids` buffer are not used by
sentence-transformers' pooling and are never read. float16 and bfloat16 tensors are widened
to float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open

from models.bert.model import Attention, BertEncoder, EncoderLayer
from models.errors import MissingModelFileError, MissingTensorError, TensorShapeError, WeightsError

__all__ = ["load_weights", "tensor_map"]

Transform = Callable[[np.ndarray], np.ndarray]
_FIRST = "embeddings.word_embeddings.weight"
_PREFIXES = ("", "bert.")


def _same(array: np.ndarray) -> np.ndarray:
    return array


def _transpose(array: np.ndarray) -> np.ndarray:
    return array.T


def _linear(
    prefix: str, layer: nnx.Linear
) -> Iterator[tuple[str, nnx.Param[jnp.ndarray], Transform]]:
    yield f"{prefix}.weight", layer.kernel, _transpose
    assert layer.bias is not None
    yield f"{prefix}.bias", layer.bias, _same


def _norm(
    prefix: str, norm: nnx.LayerNorm
) -> Iterator[tuple[str, nnx.Param[jnp.ndarray], Transform]]:
    assert norm.scale is not None
    assert norm.bias is not None
    yield f"{prefix}.weight", norm.scale, _same
    yield f"{prefix}.bias", norm.bias, _same


def _attention(
    prefix: str, attn: Attention
) -> Iterator[tuple[str, nnx.Param[jnp.ndarray], Transform]]:
    for name in ("query", "key", "value"):
        yield from _linear(f"{prefix}.self.{name}", getattr(attn, name))
    yield from _linear(f"{prefix}.output.dense", attn.output)
    yield from _norm(f"{prefix}.output.LayerNorm", attn.layer_norm)


def _layer(
    prefix: str, layer: EncoderLayer
) -> Iterator[tuple[str, nnx.Param[jnp.ndarray], Transform]]:
    yield from _attention(f"{prefix}.attention", layer.attention)
    yield from _linear(f"{prefix}.intermediate.dense", layer.intermediate)
    yield from _linear(f"{prefix}.output.dense", layer.output)
    yield from _norm(f"{prefix}.output.LayerNorm", layer.layer_norm)


def tensor_map(model: BertEncoder) -> Iterator[tuple[str, nnx.Param[jnp.ndarray], Transform]]:
    """Yield (safetensors name, NNX parameter, transform to the parameter's layout)."""
    emb = model.embeddings
    yield _FIRST, emb.word_embeddings.embedding, _same
    yield "embeddings.position_embeddings.weight", emb.position_embeddings.embedding, _same
    yield "embeddings.token_type_embeddings.weight", emb.token_type_embeddings.embedding, _same
    yield from _norm("embeddings.LayerNorm", emb.layer_norm)
    for index, layer in enumerate(model.layers):
        yield from _layer(f"encoder.layer.{index}", layer)


def load_weights(model: BertEncoder, path: str | Path) -> None:
    """Copy every tensor the encoder needs from a BERT safetensors file into `model`, in place.

    Raises:
        MissingModelFileError: no such file.
        WeightsError: not a safetensors file.
        MissingTensorError: a tensor the model needs is not in the file.
        TensorShapeError: a tensor's shape does not match the model's parameter.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingModelFileError(path)
    try:
        with safe_open(str(path), framework="numpy") as tensors:
            _copy(model, tensors, str(path))
    except SafetensorError as error:
        raise WeightsError(f"{path} cannot be read as safetensors: {error}") from error


def _copy(model: BertEncoder, tensors: Any, path: str) -> None:
    names = set(tensors.keys())
    prefix = next((p for p in _PREFIXES if p + _FIRST in names), "")
    for name, param, transform in tensor_map(model):
        stored = prefix + name
        if stored not in names:
            raise MissingTensorError(stored, path)
        array = transform(tensors.get_tensor(stored))
        expected = tuple(param[...].shape)
        if array.shape != expected:
            raise TensorShapeError(stored, path, expected, tuple(array.shape))
        param[...] = jnp.asarray(array, dtype=param[...].dtype)
