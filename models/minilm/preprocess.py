"""Tokenisation for all-MiniLM-L6-v2 with the `tokenizers` library.

Matches sentence-transformers: surrounding whitespace stripped, lower-cased WordPiece,
[CLS] ... [SEP], truncated to 256 tokens including the special tokens. No padding here:
padding to shape buckets is the runner's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from models.minilm.config import MAX_SEQ_LEN
from models.servable import Tokenized

__all__ = ["MiniLMTokenizer"]


class MiniLMTokenizer:
    """Wraps a `tokenizers.Tokenizer` loaded from tokenizer.json."""

    def __init__(self, path: str | Path, max_length: int = MAX_SEQ_LEN) -> None:
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._max_length = max_length
        self._tokenizer.enable_truncation(max_length)

    @property
    def max_length(self) -> int:
        """Longest encoding returned, special tokens included."""
        return self._max_length

    def __call__(self, texts: Sequence[str], max_length: int | None = None) -> Tokenized:
        """Tokenise `texts`; `max_length` (at most the default) truncates harder."""
        limit = self._max_length if max_length is None else min(max_length, self._max_length)
        stripped = [text.strip() for text in texts]  # as sentence-transformers does
        encodings = self._tokenizer.encode_batch_fast(stripped) if stripped else []
        ids: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        for encoding in encodings:
            row = np.asarray(encoding.ids, dtype=np.int32)
            mask = np.asarray(encoding.attention_mask, dtype=np.int32)
            if row.shape[0] > limit:  # keep [SEP] last, as truncation would
                row = np.concatenate([row[: limit - 1], row[-1:]])
                mask = mask[:limit]
            ids.append(row)
            masks.append(mask)
        lengths = np.fromiter((row.shape[0] for row in ids), dtype=np.int32, count=len(ids))
        return Tokenized(ids=tuple(ids), attention_masks=tuple(masks), lengths=lengths)
