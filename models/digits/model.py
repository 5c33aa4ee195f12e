"""The digits CNN: two 3x3 convolutions with max pooling, then two dense layers."""

from __future__ import annotations

import jax
from flax import nnx

__all__ = ["IMAGE_SIZE", "MAX_PIXEL", "NUM_CLASSES", "DigitsCNN"]

IMAGE_SIZE = 8
"""Images are IMAGE_SIZE x IMAGE_SIZE pixels."""
MAX_PIXEL = 16.0
"""Pixel values run from 0 to MAX_PIXEL (scikit-learn's scale); the model divides by it."""
NUM_CLASSES = 10


def _pool(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2, as a reshape and a max.

    The same values as `nnx.max_pool`; its gradient is plain element-wise work, where
    max_pool's select-and-scatter takes XLA's CPU compiler about twice as long (4 against 8 s
    for the training step on this machine).
    """
    n, height, width, channels = x.shape
    return x.reshape(n, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


class DigitsCNN(nnx.Module):
    """float32 (n, 8, 8) images in scikit-learn's 0-16 scale in, (n, 10) logits out."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, 16, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, kernel_size=(3, 3), rngs=rngs)
        flat = 32 * (IMAGE_SIZE // 4) ** 2
        self.linear1 = nnx.Linear(flat, 64, rngs=rngs)
        self.linear2 = nnx.Linear(64, NUM_CLASSES, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = (images / MAX_PIXEL)[..., None]  # (n, 8, 8, 1), values in [0, 1]
        x = _pool(nnx.relu(self.conv1(x)))  # (n, 4, 4, 16)
        x = _pool(nnx.relu(self.conv2(x)))  # (n, 2, 2, 32)
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.linear1(x))
        logits: jax.Array = self.linear2(x)
        return logits

    def probabilities(self, images: jax.Array) -> jax.Array:
        """float32 (n, 10) class probabilities (softmax of the logits)."""
        probs: jax.Array = jax.nn.softmax(self(images).astype("float32"), axis=-1)
        return probs
