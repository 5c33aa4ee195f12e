"""The small protocol a model implements to be served by `ModelRunner`.

A model folder provides tokenisation and a pure forward function; the runner owns padding,
shape buckets, jit compilation, warm-up and the compute thread. A second model is a new folder
with a `build(dtype)` that returns a `Servable`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import numpy as np

__all__ = ["Servable", "ServableFactory", "Tokenized"]


@dataclass(frozen=True)
class Tokenized:
    """Unpadded token ids, one int32 array per text, and each text's token count."""

    ids: tuple[np.ndarray, ...]
    attention_masks: tuple[np.ndarray, ...]
    lengths: np.ndarray  # int32 (n,), special tokens included


class Servable(Protocol):
    """What the runner needs from a model."""

    @property
    def name(self) -> str:
        """Model name, as the registry knows it."""
        ...

    @property
    def version(self) -> str:
        """Model and weights version, e.g. ``all-MiniLM-L6-v2@0.1.0``."""
        ...

    @property
    def output_dim(self) -> int:
        """Width of one output row."""
        ...

    @property
    def max_seq_len(self) -> int:
        """Longest token sequence the model accepts (special tokens included)."""
        ...

    @property
    def pad_id(self) -> int:
        """Token id used for padding."""
        ...

    @property
    def params(self) -> Any:
        """The model's parameters (a pytree), passed to `apply` as an argument."""
        ...

    def tokenize(self, texts: Sequence[str], max_length: int) -> Tokenized:
        """Tokenise without padding, truncating each text to `max_length` tokens."""
        ...

    def apply(self, params: Any, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Pure forward pass on a padded (batch, seq) batch; returns (batch, output_dim)."""
        ...


ServableFactory = Callable[[str], Servable]
"""Builds a servable for a compute dtype name ("float32" or "bfloat16")."""
