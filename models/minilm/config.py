"""all-MiniLM-L6-v2's figures: a `BertConfig` defaulting to its shape, its pooling and length.

Serving never relies on these defaults: `models.minilm.servable` reads the weights package's
config.json, modules.json and sentence_bert_config.json like any BERT-family folder
(`models.bert`). They name the model's published shape for code that builds the module
directly (tests, the GPU recipe's random weights) and are what a MiniLM folder without the
sentence-transformers files (config.json, tokenizer.json and weights only) is served with.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.bert.config import BertConfig
from models.bert.pooling import Pooling

__all__ = ["MAX_SEQ_LEN", "POOLING", "MiniLMConfig"]

# sentence-transformers' max_seq_length for all-MiniLM-L6-v2 ([CLS] and [SEP] included).
MAX_SEQ_LEN = 256
#: mean pooling, then L2 normalisation (its modules.json: Transformer, Pooling, Normalize)
POOLING = Pooling("mean", normalize=True)


@dataclass(frozen=True)
class MiniLMConfig(BertConfig):
    """A `BertConfig` whose fields default to all-MiniLM-L6-v2's (`from_json` fills gaps)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
