"""Tokenisation for all-MiniLM-L6-v2: `models.bert.tokenizer.BertTokenizer` at 256 tokens.

sentence-transformers' pipeline for this model: surrounding whitespace stripped, lower-cased
WordPiece, [CLS] ... [SEP], truncated to 256 tokens including the special tokens; printable
ASCII texts take the batch-level fast path (see `models.bert.tokenizer`).
"""

from __future__ import annotations

from pathlib import Path

from models.bert.tokenizer import BertTokenizer
from models.minilm.config import MAX_SEQ_LEN

__all__ = ["MiniLMTokenizer"]


class MiniLMTokenizer(BertTokenizer):
    """all-MiniLM-L6-v2's tokeniser: texts in, a `TokenBatch` out."""

    def __init__(self, path: str | Path, max_length: int = MAX_SEQ_LEN) -> None:
        super().__init__(path, max_length)
