"""all-MiniLM-L6-v2 as a Flax NNX module: a BERT encoder, mean pooling and L2 normalisation.

Parameters are float32; `dtype` is the compute dtype (float32 on CPU, bfloat16 on GPU). Layer
norms, pooling and normalisation run in float32 whatever `dtype` is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models.minilm.config import MiniLMConfig

__all__ = ["MiniLM"]


class Embeddings(nnx.Module):
    """Word + position + token-type embeddings, then a layer norm."""

    def __init__(self, cfg: MiniLMConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
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

    def __init__(self, cfg: MiniLMConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
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

    def __init__(self, cfg: MiniLMConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
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


class MiniLM(nnx.Module):
    """Sentence encoder: token ids and attention mask in, unit-norm embeddings out."""

    def __init__(
        self, cfg: MiniLMConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs
    ) -> None:
        self.config = cfg
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
            float32 (rows * segments_per_row, hidden) unit-norm embeddings (absent segments
            are zero rows). Tokens attend only within their segment, so a sequence's embedding
            does not depend on its neighbours.
        """
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        mask = same[:, None, :, :]  # (rows, heads, query, key); padding attends to padding
        x = self.embeddings(input_ids, position_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return segment_mean_normalise(x, segment_ids, segments_per_row)


def segment_mean_normalise(
    hidden: jax.Array, segment_ids: jax.Array, segments_per_row: int
) -> jax.Array:
    """Mean over each segment's tokens, then L2 normalisation, as sentence-transformers does."""
    rows, _, width = hidden.shape
    # (rows, segments, length) one-hot: a matmul pools every segment (cheap next to the layers)
    numbers = jnp.arange(1, segments_per_row + 1, dtype=segment_ids.dtype)
    members = (segment_ids[:, None, :] == numbers[None, :, None]).astype(jnp.float32)
    summed = jnp.einsum(
        "rsl,rlh->rsh", members, hidden.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST
    ).reshape(rows * segments_per_row, width)
    counts = members.sum(axis=-1).reshape(rows * segments_per_row)
    mean = summed / jnp.maximum(counts, 1e-9)[:, None]
    norm = jnp.linalg.norm(mean, axis=-1, keepdims=True)
    return mean / jnp.maximum(norm, 1e-12)
