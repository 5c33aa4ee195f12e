"""The small protocol a model implements to be served by `ModelRunner`.

A model folder provides tokenisation (texts -> `TokenBatch`) and a pure forward function over
packed rows; the runner owns packing, shape buckets, jit compilation, warm-up and the
threads. A second model is a new folder with a `build(dtype)` that returns a `Servable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import jax

from models.packing import TokenBatch

__all__ = ["Servable", "ServableFactory"]


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
    def min_tokens(self) -> int:
        """Fewest tokens `tokenize` returns for one text (2 for BERT: [CLS] [SEP])."""
        ...

    @property
    def params(self) -> Any:
        """The model's parameters (a pytree), passed to `apply` as an argument."""
        ...

    def tokenize(self, texts: Sequence[str], max_length: int) -> TokenBatch:
        """Tokenise without padding, truncating each text to `max_length` tokens."""
        ...

    def apply(
        self,
        params: Any,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        position_ids: jax.Array,
        segments_per_row: int,
    ) -> jax.Array:
        """Pure forward pass on packed (rows, length) arrays (see `models.packing`).

        Returns (rows * segments_per_row, output_dim): row ``r * segments_per_row + s - 1``
        answers segment ``s`` of row ``r``. ``segments_per_row`` is static under jit.
        """
        ...


class ServableFactory(Protocol):
    """Builds a servable for a compute dtype name ("float32" or "bfloat16") and a weight
    quantisation ("none" or "int8-weight-only")."""

    def __call__(self, dtype: str, *, quantization: str = "none") -> Servable: ...
