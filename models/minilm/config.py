"""MiniLM hyperparameters, read from the weights package's config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_SEQ_LEN", "MiniLMConfig"]

# sentence-transformers' max_seq_length for all-MiniLM-L6-v2 ([CLS] and [SEP] included).
MAX_SEQ_LEN = 256


@dataclass(frozen=True)
class MiniLMConfig:
    """Shape of a BERT encoder; field names follow Hugging Face's config.json."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_json(cls, path: str | Path) -> MiniLMConfig:
        """Read the fields this model uses from a Hugging Face config.json."""
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: hidden_act {raw['hidden_act']!r} is not supported")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute position embeddings are supported")
        names = cls.__dataclass_fields__
        return cls(**{key: value for key, value in raw.items() if key in names})
