"""A BERT-family sentence encoder from a folder, packaged for the runner.

    servable = load_encoder("path/to/folder", name="my-encoder", version="my-encoder@1")
    runner = ModelRunner(servable, RunnerConfig(seq_buckets=(32, 128)))

The folder is in the Hugging Face / sentence-transformers layout (see `models.bert.config`):
config.json, model.safetensors, tokenizer.json, and the sentence-transformers files that say
how to pool (modules.json, 1_Pooling/config.json) and how long an input may be
(sentence_bert_config.json). Everything is read from the files; nothing about the model's
shape is assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.bert.config import BertConfig, EncoderSpec, read_spec
from models.bert.model import BertEncoder
from models.bert.pooling import SENTENCE_TRANSFORMERS_DEFAULT, Pooling
from models.bert.quantize import QUANTIZATIONS, quantize
from models.bert.tokenizer import BertTokenizer
from models.bert.weights import load_weights
from models.errors import ModelFolderError, UnsupportedQuantizationError
from models.packing import TokenBatch

__all__ = ["BertEncoderServable", "load_encoder"]


class BertEncoderServable:
    """A BERT encoder as a `models.servable.Servable`: params are an NNX state, apply merges them.

    Build it with `load_encoder` (from a folder) or from a checked `EncoderSpec`.
    """

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        name: str,
        version: str,
        dtype: str = "float32",
        quantization: str = "none",
    ) -> None:
        if quantization not in QUANTIZATIONS:  # before the weights are read
            raise UnsupportedQuantizationError(quantization, QUANTIZATIONS)
        self.spec = spec
        self._tokenizer = BertTokenizer(
            spec.tokenizer_path, max_length=spec.max_seq_length, lowercase=spec.lowercase
        )
        if self._tokenizer.id_limit > spec.config.vocab_size:  # JAX would clamp, silently
            raise ModelFolderError(
                spec.tokenizer_path,
                f"has token ids up to {self._tokenizer.id_limit - 1}, beyond config.json's "
                f"vocab_size {spec.config.vocab_size}",
            )
        model = BertEncoder(
            spec.config, pooling=spec.pooling, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0)
        )
        load_weights(model, spec.weights_path)
        quantize(model, quantization)  # the float kernels are dropped: only int8 + scales stay
        self._graphdef, self._state = nnx.split(model)
        self._name = name
        self._version = version
        self._quantization = quantization

    @property
    def config(self) -> BertConfig:
        """The encoder's shape, from config.json."""
        return self.spec.config

    @property
    def pooling(self) -> Pooling:
        """Pooling and normalisation, from modules.json and the pooling config."""
        return self.spec.pooling

    @property
    def quantization(self) -> str:
        """How the weights are stored: "none" (float32) or "int8-weight-only"."""
        return self._quantization

    @property
    def tokenizer(self) -> BertTokenizer:
        """The model's tokeniser."""
        return self._tokenizer

    @property
    def name(self) -> str:
        """The name requests use."""
        return self._name

    @property
    def version(self) -> str:
        """The version answers carry."""
        return self._version

    @property
    def output_dim(self) -> int:
        """Embedding width: config.json's hidden_size."""
        return self.spec.config.hidden_size

    @property
    def max_seq_len(self) -> int:
        """Longest input in tokens: sentence_bert_config.json's max_seq_length, or the default."""
        return self._tokenizer.max_length

    @property
    def pad_id(self) -> int:
        """config.json's pad_token_id (padding is masked out; any valid id would do)."""
        return self.spec.config.pad_token_id

    @property
    def params(self) -> Any:
        """The NNX state (every parameter), to pass to `apply`."""
        return self._state

    @property
    def min_tokens(self) -> int:
        """Tokens of an empty text (2 for BERT: [CLS] [SEP])."""
        return self._tokenizer.min_tokens

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


def load_encoder(
    folder: str | Path,
    *,
    name: str,
    version: str,
    dtype: str = "float32",
    quantization: str = "none",
    default_pooling: Pooling = SENTENCE_TRANSFORMERS_DEFAULT,
) -> BertEncoderServable:
    """Load the BERT-family sentence encoder in ``folder``, to serve as ``name``/``version``.

    Args:
        dtype: compute dtype, "float32" (CPU) or "bfloat16" (GPU); parameters stay float32.
        quantization: "int8-weight-only" keeps the dense kernels as int8 with per-channel
            scales, dequantised in the forward pass (`models.bert.quantize`); "none" keeps
            every parameter float32.
        default_pooling: the pooling of a folder without modules.json; sentence-transformers'
            own (mean, not normalised) unless the caller knows better.

    Raises:
        models.errors.ModelFolderError: a file is missing (`MissingModelFileError`), describes
            an unsupported model (`UnsupportedModelError`) or cannot be read; the message
            names the file.
        models.errors.WeightsError: model.safetensors lacks a tensor or has a wrong shape.
        models.errors.UnsupportedQuantizationError: an unknown ``quantization``.
    """
    spec = read_spec(folder, default_pooling=default_pooling)
    return BertEncoderServable(
        spec, name=name, version=version, dtype=dtype, quantization=quantization
    )
