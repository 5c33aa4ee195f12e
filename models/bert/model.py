"""A BERT encoder as a Flax NNX module, over packed rows, with sentence-transformers' pooling.

Rows are packed (`models.packing`): several texts per row, each a segment with its own
positions, attending only within itself; pooling is per segment, so a text's vector does not
depend on its neighbours. Parameters are float32; ``dtype`` is the compute dtype (float32 on
CPU, bfloat16 on GPU). Layer norms, pooling and normalisation run in float32 whatever
``dtype`` is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models.bert.config import BertConfig
from models.bert.pooling import Pooling

__all__ = [
    "Attention",
    "BertEncoder",
    "Embeddings",
    "EncoderLayer",
    "l2_normalise",
    "pool",
    "segment_cls",
    "segment_max",
    "segment_mean",
    "segment_mean_normalise",
]


class Embeddings(nnx.Module):
    """Word + position + token-type embeddings, then a layer norm."""

    def __init__(self, cfg: BertConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        self.word_embeddings = nnx.Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs)
        self.position_embeddings = nnx.Embed(
            cfg.max_position_embeddings, cfg.hidden_size, rngs=rngs
        )
        self.token_type_embeddings = nnx.Embed(cfg.type_vocab_size, cfg.hidden_size, rngs=rngs)
        self.layer_norm = nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.dtype = dtype

    def __call__(self, input_ids: jax.Array, position_ids: jax.Array) -> jax.Array:
        x = self.word_embeddings(input_ids)
        x = x + self.position_embeddings(position_ids)
        # Single-sentence inputs: every token has type 0.
        x = x + self.token_type_embeddings.embedding[0]
        out: jax.Array = self.layer_norm(x).astype(self.dtype)
        return out


class Attention(nnx.Module):
    """Multi-head self-attention with a residual connection and post layer norm."""

    def __init__(self, cfg: BertConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        width = cfg.hidden_size
        self.query = nnx.Linear(width, width, dtype=dtype, rngs=rngs)
        self.key = nnx.Linear(width, width, dtype=dtype, rngs=rngs)
        self.value = nnx.Linear(width, width, dtype=dtype, rngs=rngs)
        self.output = nnx.Linear(width, width, dtype=dtype, rngs=rngs)
        self.layer_norm = nnx.LayerNorm(width, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.dtype = dtype

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        batch, seq, width = x.shape
        split = (batch, seq, self.heads, self.head_dim)
        q = self.query(x).reshape(split)
        k = self.key(x).reshape(split)
        v = self.value(x).reshape(split)
        attended = jax.nn.dot_product_attention(q, k, v, mask=mask)
        out = self.output(attended.reshape(batch, seq, width))
        result: jax.Array = self.layer_norm(x + out).astype(self.dtype)
        return result


class EncoderLayer(nnx.Module):
    """One BERT layer: self-attention, then a GELU feed-forward block."""

    def __init__(self, cfg: BertConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        self.attention = Attention(cfg, dtype=dtype, rngs=rngs)
        self.intermediate = nnx.Linear(
            cfg.hidden_size, cfg.intermediate_size, dtype=dtype, rngs=rngs
        )
        self.output = nnx.Linear(cfg.intermediate_size, cfg.hidden_size, dtype=dtype, rngs=rngs)
        self.layer_norm = nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = self.attention(x, mask)
        hidden = jax.nn.gelu(self.intermediate(x), approximate=False)  # BERT's erf GELU
        out: jax.Array = self.layer_norm(x + self.output(hidden)).astype(self.dtype)
        return out


class BertEncoder(nnx.Module):
    """Sentence encoder: packed token ids in, one pooled vector per segment out."""

    def __init__(
        self,
        cfg: BertConfig,
        *,
        pooling: Pooling,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.config = cfg
        self.pooling = pooling
        self.embeddings = Embeddings(cfg, dtype=dtype, rngs=rngs)
        self.layers = nnx.List(
            [EncoderLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_hidden_layers)]
        )

    def __call__(
        self,
        input_ids: jax.Array,
        segment_ids: jax.Array,
        position_ids: jax.Array,
        segments_per_row: int,
    ) -> jax.Array:
        """Embed a packed batch: several sequences per row, each its own segment.

        Args:
            input_ids: int (rows, length) token ids.
            segment_ids: int (rows, length): 1, 2, ... for each sequence of a row, 0 padding.
            position_ids: int (rows, length), restarting at 0 in each segment.
            segments_per_row: static; output row ``r * segments_per_row + s - 1`` is segment
                ``s`` of row ``r``.

        Returns:
            float32 (rows * segments_per_row, hidden) pooled vectors (absent segments are
            zero rows). Tokens attend only within their segment, so a sequence's vector does
            not depend on its neighbours.
        """
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        mask = same[:, None, :, :]  # (rows, heads, query, key); padding attends to padding
        x = self.embeddings(input_ids, position_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return pool(x, segment_ids, position_ids, segments_per_row, self.pooling)


def pool(
    hidden: jax.Array,
    segment_ids: jax.Array,
    position_ids: jax.Array,
    segments_per_row: int,
    pooling: Pooling,
) -> jax.Array:
    """One float32 vector per segment slot, as ``pooling`` says; absent slots are zero rows."""
    if pooling.mode == "mean":
        pooled = segment_mean(hidden, segment_ids, segments_per_row)
    elif pooling.mode == "cls":
        pooled = segment_cls(hidden, segment_ids, position_ids, segments_per_row)
    else:
        pooled = segment_max(hidden, segment_ids, segments_per_row)
    return l2_normalise(pooled) if pooling.normalize else pooled


def segment_mean(hidden: jax.Array, segment_ids: jax.Array, segments_per_row: int) -> jax.Array:
    """Mean over each segment's tokens (sentence-transformers' mean over the attention mask)."""
    rows, _, width = hidden.shape
    # (rows, segments, length) one-hot: a matmul pools every segment (cheap next to the layers)
    numbers = jnp.arange(1, segments_per_row + 1, dtype=segment_ids.dtype)
    members = (segment_ids[:, None, :] == numbers[None, :, None]).astype(jnp.float32)
    summed = jnp.einsum(
        "rsl,rlh->rsh", members, hidden.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST
    ).reshape(rows * segments_per_row, width)
    counts = members.sum(axis=-1).reshape(rows * segments_per_row)
    return summed / jnp.maximum(counts, 1e-9)[:, None]


def _slots(segment_ids: jax.Array, segments_per_row: int) -> jax.Array:
    """Each token's output slot ``row * segments_per_row + segment - 1``; padding -> the last."""
    rows = segment_ids.shape[0]
    row = jnp.arange(rows, dtype=jnp.int32)[:, None]
    slot = row * segments_per_row + segment_ids.astype(jnp.int32) - 1
    return jnp.where(segment_ids > 0, slot, rows * segments_per_row).reshape(-1)


def segment_cls(
    hidden: jax.Array, segment_ids: jax.Array, position_ids: jax.Array, segments_per_row: int
) -> jax.Array:
    """Each segment's first token ([CLS] for BERT): sentence-transformers' cls pooling.

    A packed row holds several texts, so "the first token" is the one at position 0 of each
    segment, not the row's first.
    """
    rows, length, width = hidden.shape
    slots = rows * segments_per_row
    first = (position_ids == 0) & (segment_ids > 0)
    slot = jnp.where(first.reshape(-1), _slots(segment_ids, segments_per_row), slots)
    flat = hidden.astype(jnp.float32).reshape(rows * length, width)
    # one token per slot: the sum is that token's vector, exactly
    return jax.ops.segment_sum(flat, slot, num_segments=slots + 1)[:slots]


def segment_max(hidden: jax.Array, segment_ids: jax.Array, segments_per_row: int) -> jax.Array:
    """Element-wise max over each segment's tokens: sentence-transformers' max pooling."""
    rows, length, width = hidden.shape
    slots = rows * segments_per_row
    slot = _slots(segment_ids, segments_per_row)
    flat = hidden.astype(jnp.float32).reshape(rows * length, width)
    peak = jax.ops.segment_max(flat, slot, num_segments=slots + 1)[:slots]
    present = jax.ops.segment_sum(jnp.ones_like(slot), slot, num_segments=slots + 1)[:slots]
    return jnp.where(present[:, None] > 0, peak, 0.0)


def l2_normalise(vectors: jax.Array) -> jax.Array:
    """Unit rows, as torch's F.normalize (sentence-transformers' Normalize); zero rows stay 0."""
    norm = jnp.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / jnp.maximum(norm, 1e-12)


def segment_mean_normalise(
    hidden: jax.Array, segment_ids: jax.Array, segments_per_row: int
) -> jax.Array:
    """Mean over each segment's tokens, then L2 normalisation (all-MiniLM-L6-v2's pooling)."""
    return l2_normalise(segment_mean(hidden, segment_ids, segments_per_row))
