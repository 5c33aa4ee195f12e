"""all-MiniLM-L6-v2 as a Flax NNX module: the BERT encoder (`models.bert.model`) with mean
pooling and L2 normalisation.

Parameters are float32; `dtype` is the compute dtype (float32 on CPU, bfloat16 on GPU). Layer
norms, pooling and normalisation run in float32 whatever `dtype` is.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from models.bert.config import BertConfig
from models.bert.model import (
    Attention,
    BertEncoder,
    Embeddings,
    EncoderLayer,
    segment_mean_normalise,
)
from models.minilm.config import POOLING

__all__ = ["Attention", "Embeddings", "EncoderLayer", "MiniLM", "segment_mean_normalise"]


class MiniLM(BertEncoder):
    """Sentence encoder: packed token ids in, unit-norm mean-pooled embeddings out."""

    def __init__(self, cfg: BertConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs) -> None:
        super().__init__(cfg, pooling=POOLING, dtype=dtype, rngs=rngs)
