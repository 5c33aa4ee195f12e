"""A bench-only test double: MiniLM's shape with a forward pass that computes nothing.

Selected only by ``KINFER_BENCH_ZERO_COST`` (the benchmarks' host-ceiling rows); never a
default. With it the whole host path runs as in production (decode, batch, tokenise, pack,
answer, publish) while the model returns one constant unit row per input, so the figures show
what the worker itself costs per message and per input: the ceiling a fast accelerator meets.

- ``"model"``: the real MiniLM tokeniser (from ``KINFER_MODEL_DIR`` when set), a constant
  forward.
- ``"model-and-tokenizer"``: no tokeniser either; every text becomes the same 18 token ids
  (the bench's texts are about 18 tokens), built with numpy in one step.
Answers carry the version ``zero-cost@bench`` so they can never pass for real embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from models.packing import TokenBatch

__all__ = ["ZERO_COST_MODES", "ZeroCostServable"]

ZERO_COST_MODES = ("off", "model", "model-and-tokenizer")
_FIXED_LENGTH = 18
_WIDTH = 384  # MiniLM's embedding width


class ZeroCostServable:
    """MiniLM's interface; `apply` returns constant rows, `tokenize` optionally skipped."""

    version = "zero-cost@bench"
    output_dim = _WIDTH
    max_seq_len = 256
    pad_id = 0
    min_tokens = 2

    def __init__(self, name: str, mode: str, model_dir: str | Path | None = None) -> None:
        if mode not in ZERO_COST_MODES[1:]:
            raise ValueError(f"zero-cost mode {mode!r}: expected one of {ZERO_COST_MODES[1:]}")
        self.name = name
        self.mode = mode
        self.params: Any = {"row": jnp.full((_WIDTH,), _WIDTH**-0.5, jnp.float32)}
        self._tokenizer = None
        if mode == "model":
            from models.minilm.preprocess import MiniLMTokenizer
            from models.minilm.servable import weights_dir

            folder = Path(model_dir) if model_dir is not None else weights_dir()
            self._tokenizer = MiniLMTokenizer(folder / "tokenizer.json")

    def tokenize(self, texts: Sequence[str], max_length: int) -> TokenBatch:
        """The real tokeniser (mode "model"), or 18 fixed ids per text."""
        if self._tokenizer is not None:
            return self._tokenizer(texts, max_length)
        length = min(_FIXED_LENGTH, max_length)
        ids = np.tile(np.arange(101, 101 + length, dtype=np.int32), len(texts))
        return TokenBatch(ids, np.full(len(texts), length, dtype=np.int32))

    def apply(
        self,
        params: Any,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        position_ids: jax.Array,
        segments_per_row: int,
    ) -> jax.Array:
        """The same constant unit row for every output slot."""
        rows = input_ids.shape[0] * segments_per_row
        out: jax.Array = jnp.broadcast_to(params["row"], (rows, _WIDTH))
        return out
