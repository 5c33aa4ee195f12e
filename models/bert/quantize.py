"""Int8 weight-only quantisation of a BERT encoder's dense layers.

``quantize_dense_layers(model)`` replaces, in place, every dense layer of the encoder's layers
(attention query, key, value and output; the feed-forward intermediate and output) by an
`Int8Linear`: its kernel is stored as int8 with one float32 scale per output channel
(symmetric, ``scale = max|w| / 127`` over the channel, ``q = round(w / scale)``). Inside the
jitted forward each kernel is dequantised right before its matmul,
``(q.astype(float32) * scale).astype(compute dtype)``; only the int8 values and the scales are
kept between calls. Embeddings, layer norms and biases stay float32.

The matmuls still run in the compute dtype (XLA on CPU has no int8 x float kernel): this saves
parameter memory (the dense kernels shrink 4x) and costs a little time for the dequantisation,
it does not make a CPU faster.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.bert.model import BertEncoder
from models.errors import UnsupportedQuantizationError

__all__ = [
    "INT8_MAX",
    "QUANTIZATIONS",
    "Int8Kernel",
    "Int8Linear",
    "dequantize_int8",
    "parameter_bytes",
    "quantize",
    "quantize_dense_layers",
    "quantize_int8",
]

#: Symmetric int8: values in [-127, 127] (-128 is never used, so negation is exact).
INT8_MAX = 127
#: What a manifest's ``quantization`` may say (`models.repository.Manifest`).
QUANTIZATIONS = ("none", "int8-weight-only")


class Int8Kernel(nnx.Variable[jax.Array]):
    """An int8 weight tensor: not trainable, dequantised on use."""


def quantize_int8(kernel: np.ndarray | jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 quantisation of an (in, out) kernel.

    Returns:
        (int8 (in, out) values, float32 (out,) scales) such that ``values * scales``
        approximates ``kernel``: each element is off by at most half its channel's scale. A
        channel that is all zeros gets scale 1 (its values are 0).
    """
    weights = np.asarray(kernel, dtype=np.float32)
    if weights.ndim != 2:
        raise ValueError(f"expected an (in, out) kernel, got shape {weights.shape}")
    peak = np.abs(weights).max(axis=0)
    scales = np.where(peak > 0, peak / INT8_MAX, 1.0).astype(np.float32)
    values = np.clip(np.rint(weights / scales), -INT8_MAX, INT8_MAX).astype(np.int8)
    return values, scales


def dequantize_int8(values: jax.Array, scales: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
    """``values * scales`` in float32, then cast to ``dtype`` (traceable under jit)."""
    return (values.astype(jnp.float32) * scales.astype(jnp.float32)).astype(dtype)


class Int8Linear(nnx.Module):
    """A dense layer whose kernel is int8 with per-output-channel scales; bias stays float32.

    Computes ``x @ dequantize(kernel, scale) + bias`` in ``dtype``, as `nnx.Linear` would with
    the dequantised kernel.
    """

    def __init__(
        self, values: np.ndarray, scales: np.ndarray, bias: np.ndarray, *, dtype: Any
    ) -> None:
        if values.dtype != np.int8 or scales.shape != (values.shape[1],):
            raise ValueError(
                f"expected int8 (in, out) values and (out,) scales, got {values.dtype} "
                f"{values.shape} and {scales.shape}"
            )
        self.kernel = Int8Kernel(jnp.asarray(values))
        self.scale = nnx.Param(jnp.asarray(scales, dtype=jnp.float32))
        self.bias = nnx.Param(jnp.asarray(bias, dtype=jnp.float32))
        self.dtype = dtype

    @classmethod
    def from_linear(cls, linear: nnx.Linear) -> Int8Linear:
        """Quantise a float `nnx.Linear` (with a bias); its compute dtype is kept."""
        if linear.bias is None:
            raise ValueError("Int8Linear quantises dense layers with a bias")
        values, scales = quantize_int8(np.asarray(linear.kernel[...]))
        return cls(values, scales, np.asarray(linear.bias[...]), dtype=linear.dtype or jnp.float32)

    def __call__(self, inputs: jax.Array) -> jax.Array:
        kernel = dequantize_int8(self.kernel[...], self.scale[...], self.dtype)
        out = jax.lax.dot_general(
            inputs.astype(self.dtype), kernel, (((inputs.ndim - 1,), (0,)), ((), ()))
        )
        result: jax.Array = out + self.bias[...].astype(self.dtype)
        return result


def _dense_layers(model: BertEncoder) -> Iterator[tuple[nnx.Module, str]]:
    """(owner, attribute) of every dense layer in the encoder's layers."""
    for layer in model.layers:
        for name in ("query", "key", "value", "output"):
            yield layer.attention, name
        yield layer, "intermediate"
        yield layer, "output"


def quantize_dense_layers(model: BertEncoder) -> int:
    """Replace every dense layer of ``model``'s encoder layers by an `Int8Linear`, in place.

    Call it after the float weights are loaded. Returns the number of layers quantised.
    """
    count = 0
    for owner, name in _dense_layers(model):
        linear = getattr(owner, name)
        if isinstance(linear, nnx.Linear):
            setattr(owner, name, Int8Linear.from_linear(linear))
            count += 1
    return count


def quantize(model: BertEncoder, quantization: str) -> None:
    """Apply a manifest's ``quantization`` to a loaded ``model``, in place ("none": nothing).

    Raises:
        UnsupportedQuantizationError: not one of `QUANTIZATIONS`.
    """
    if quantization not in QUANTIZATIONS:
        raise UnsupportedQuantizationError(quantization, QUANTIZATIONS)
    if quantization == "int8-weight-only":
        quantize_dense_layers(model)


def parameter_bytes(params: Any) -> int:
    """Bytes held by every array of a parameter pytree (e.g. an NNX state)."""
    return sum(int(leaf.nbytes) for leaf in jax.tree.leaves(params))
