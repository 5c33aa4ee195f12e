"""Tokenisation for BERT-family encoders, straight into a `TokenBatch` (no array per text).

Reads the model's ``tokenizer.json`` and matches sentence-transformers: surrounding
whitespace stripped, the file's own pipeline, truncated to ``max_length`` tokens including
the special tokens, and (sentence_bert_config's ``do_lower_case``) a ``Lowercase`` normaliser
put first when the pipeline does not already have one. No padding here: packing into rows is
the runner's job.

Two paths give the same ids (tests compare them on the parity fixtures and generated text):
- printable ASCII texts (the common case) take a batch-level fast path: one lower-casing and one
  regular-expression split over the whole batch joined with a separator, one C-level dictionary
  lookup per word, numpy for the rest; words outside the vocabulary are split by WordPiece's
  greedy longest match once and cached. About 4 us per short text against 40-60 us for the
  `tokenizers` pipeline on this machine's CPU, and no Python work per text;
- every other text (non-ASCII, control characters, or one that contains an added token such
  as ``[MASK]``, which the library matches before splitting) goes through `tokenizers`.
The fast path is only enabled when tokenizer.json describes exactly the BERT pipeline it
implements (a BertNormalizer, cased or lower-casing; BertPreTokenizer; WordPiece with ``##``;
a post-processor that wraps a text in one start and one end token, e.g. [CLS] ... [SEP]).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from models.bert.pooling import read_json
from models.errors import ModelFolderError, UnsupportedModelError
from models.packing import TokenBatch

__all__ = ["BertTokenizer"]

_ASCII_PUNCTUATION = "".join(
    map(chr, [*range(33, 48), *range(58, 65), *range(91, 97), *range(123, 127)])
)
#: texts the fast path handles: printable ASCII plus tab, newline and carriage return
_SIMPLE_TEXT = re.compile(r"[\t\n\r\x20-\x7e]*")
#: BertPreTokenizer on such text: runs of non-space non-punctuation, or one punctuation mark
_WORD = re.compile(
    rf"[^\s{re.escape(_ASCII_PUNCTUATION)}\x00]+|[{re.escape(_ASCII_PUNCTUATION)}\x00]"
)
_SEPARATOR = "\x00"  # never in a simple text; marks text boundaries in the joined batch
_SEPARATOR_CODE = -1
_MAX_CACHED_SPLITS = 100_000


class _WordPieceVocab(dict[str, int]):
    """Vocabulary lookup whose misses are split by WordPiece and cached as negative codes.

    Code -1 is the text separator; code -(2 + k) means "the k-th cached multi-piece split".
    """

    def __init__(self, vocab: dict[str, int], unk_id: int, max_word_chars: int) -> None:
        super().__init__(vocab)
        self[_SEPARATOR] = _SEPARATOR_CODE
        self._base_size = len(self)
        self._vocab = vocab
        self._unk_id = unk_id
        self._max_word_chars = max_word_chars
        self.splits: list[np.ndarray] = []

    def __missing__(self, word: str) -> int:
        pieces = self._split(word)
        if len(pieces) == 1:
            code = pieces[0]
        else:
            code = -2 - len(self.splits)
            self.splits.append(np.asarray(pieces, dtype=np.int64))
        self[word] = code
        return code

    def trim(self) -> None:
        """Forget cached splits once there are many (call between batches): bounded memory."""
        if len(self) - self._base_size < _MAX_CACHED_SPLITS:
            return
        for word in list(itertools.islice(self.keys(), self._base_size, None)):
            del self[word]
        self.splits = []

    def _split(self, word: str) -> list[int]:
        """WordPiece's greedy longest-match-first split of one word."""
        if len(word) > self._max_word_chars:
            return [self._unk_id]
        pieces: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self._vocab.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                return [self._unk_id]
            pieces.append(found)
            start = end
        return pieces


@dataclass(frozen=True)
class _FastPath:
    vocab: _WordPieceVocab
    start_id: int  # [CLS]
    end_id: int  # [SEP]
    lowercase: bool


def _wrapping_ids(post: dict[str, Any]) -> tuple[int, int] | None:
    """(start, end) ids when the post-processor makes a single text ``start ... end``."""
    if post.get("type") == "BertProcessing":
        cls, sep = post.get("cls"), post.get("sep")
        if isinstance(cls, list) and isinstance(sep, list) and len(cls) == len(sep) == 2:
            return int(cls[1]), int(sep[1])
        return None
    if post.get("type") != "TemplateProcessing":
        return None
    single = post.get("single", [])
    special = post.get("special_tokens", {})
    if len(single) != 3 or "Sequence" not in single[1]:
        return None
    ends = [step.get("SpecialToken", {}).get("id") for step in (single[0], single[2])]
    ids = [special.get(name, {}).get("ids") if name else None for name in ends]
    if not all(isinstance(found, list) and len(found) == 1 for found in ids):
        return None
    start, end = ids
    assert start is not None
    assert end is not None
    return int(start[0]), int(end[0])


def _fast_path(config: dict[str, Any], lowercase: bool) -> _FastPath | None:
    """The fast path's tables, or None when tokenizer.json is not the plain BERT pipeline."""
    normalizer = config.get("normalizer") or {}
    model = config.get("model") or {}
    plain_bert = (
        normalizer.get("type") == "BertNormalizer"
        and isinstance(normalizer.get("lowercase"), bool)
        and normalizer.get("clean_text", True) is True
        and (config.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
        and model.get("type") == "WordPiece"
        and model.get("continuing_subword_prefix") == "##"
    )
    ends = _wrapping_ids(config.get("post_processor") or {})
    if not plain_bert or ends is None:
        return None
    vocab: dict[str, int] = model["vocab"]
    unk = vocab.get(model.get("unk_token", "[UNK]"))
    if unk is None:
        return None
    table = _WordPieceVocab(vocab, unk, int(model.get("max_input_chars_per_word", 100)))
    return _FastPath(table, *ends, lowercase=normalizer["lowercase"] or lowercase)


def _added_tokens(config: dict[str, Any]) -> re.Pattern[str] | None:
    """Matches any added token (e.g. [MASK]): texts holding one go through the library."""
    contents = sorted(
        {
            str(token["content"])
            for token in config.get("added_tokens") or []
            if token.get("content")
        },
        key=len,
        reverse=True,
    )
    if not contents:
        return None
    return re.compile("|".join(map(re.escape, contents)), re.IGNORECASE)


def _with_lowercase(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with a Lowercase normaliser first, as sentence-transformers' do_lower_case does.

    Unchanged when the normaliser is a Lowercase or a Sequence holding one (sentence-
    transformers' own test: a lower-casing BertNormalizer still gets a Lowercase first).
    """
    normalizer = config.get("normalizer")
    parts = [normalizer] if normalizer else []
    if normalizer and normalizer.get("type") == "Sequence":
        parts = list(normalizer.get("normalizers") or [])
    if any(part.get("type") == "Lowercase" for part in parts):
        return config
    lowered = {"type": "Sequence", "normalizers": [{"type": "Lowercase"}, *parts]}
    return {**config, "normalizer": lowered}


class BertTokenizer:
    """A BERT-family model's tokeniser (its tokenizer.json): texts in, a `TokenBatch` out.

    Args:
        path: the tokenizer.json.
        max_length: longest encoding returned, special tokens included.
        lowercase: lower-case texts first (sentence_bert_config.json's ``do_lower_case``).

    Raises:
        ModelFolderError: a file the `tokenizers` library cannot load.
        UnsupportedModelError: a tokenizer that gives an empty text no token at all.
    """

    def __init__(self, path: str | Path, max_length: int, *, lowercase: bool = False) -> None:
        path = Path(path)
        config = read_json(path)
        if not isinstance(config, dict):
            raise ModelFolderError(path, "expected a JSON object")
        pipeline = _with_lowercase(config) if lowercase else config
        try:
            self._tokenizer = Tokenizer.from_str(json.dumps(pipeline))
        except Exception as error:  # the Rust side raises plain Exception
            raise ModelFolderError(
                path, f"the tokenizers library cannot load it: {error}"
            ) from None
        self._tokenizer.no_padding()
        self._max_length = max_length
        self._truncation = max_length
        self._tokenizer.enable_truncation(max_length)
        self._fast_path = _fast_path(config, lowercase)
        self._added = _added_tokens(config)
        self.min_tokens = len(self._tokenizer.encode("").ids)
        if self.min_tokens < 1:
            raise UnsupportedModelError(
                path, "an empty text has no tokens (no [CLS]/[SEP] are added): nothing to pool"
            )
        ends = _wrapping_ids(config.get("post_processor") or {})
        self.cls_id: int | None = ends[0] if ends else None
        self.sep_id: int | None = ends[1] if ends else None

    @property
    def max_length(self) -> int:
        """Longest encoding returned, special tokens included."""
        return self._max_length

    @property
    def has_fast_path(self) -> bool:
        """True when printable ASCII texts skip the `tokenizers` pipeline."""
        return self._fast_path is not None

    @property
    def id_limit(self) -> int:
        """One more than the largest token id the tokeniser can return."""
        return max(self._tokenizer.get_vocab(with_added_tokens=True).values()) + 1

    def __call__(
        self, texts: Sequence[str], max_length: int | None = None, *, fast: bool = True
    ) -> TokenBatch:
        """Tokenise `texts`; `max_length` (at most the default) truncates harder.

        ``fast=False`` sends every text through the `tokenizers` library (tests compare).
        """
        limit = self._max_length if max_length is None else min(max_length, self._max_length)
        if not texts:
            return TokenBatch(np.zeros(0, np.int32), np.zeros(0, np.int32))
        if self._fast_path is None or not fast:
            return self._library(list(texts), limit)
        simple = np.fromiter(
            (match is not None for match in map(_SIMPLE_TEXT.fullmatch, texts)),
            dtype=bool,
            count=len(texts),
        )
        added = self._added
        if added is not None and added.search(_SEPARATOR.join(texts)):  # rare: check each
            simple &= np.fromiter(
                (added.search(text) is None for text in texts), dtype=bool, count=len(texts)
            )
        if simple.all():
            return self._fast(texts, limit)
        if not simple.any():
            return self._library(list(texts), limit)
        where_simple = np.flatnonzero(simple)
        where_other = np.flatnonzero(~simple)
        return _interleave(
            len(texts),
            (where_simple, self._fast([texts[i] for i in where_simple.tolist()], limit)),
            (where_other, self._library([texts[i] for i in where_other.tolist()], limit)),
        )

    def _library(self, texts: list[str], limit: int) -> TokenBatch:
        if limit != self._truncation:
            self._tokenizer.enable_truncation(limit)
            self._truncation = limit
        encodings = self._tokenizer.encode_batch_fast([text.strip() for text in texts])
        rows = [encoding.ids for encoding in encodings]
        lengths = np.fromiter(map(len, rows), dtype=np.int32, count=len(rows))
        ids = np.fromiter(
            itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum())
        )
        return TokenBatch(ids, lengths)

    def _fast(self, texts: Sequence[str], limit: int) -> TokenBatch:
        fast = self._fast_path
        assert fast is not None
        vocab = fast.vocab
        vocab.trim()
        joined = f" {_SEPARATOR} ".join(texts)
        words = _WORD.findall(joined.lower() if fast.lowercase else joined)
        codes = np.fromiter(map(vocab.__getitem__, words), dtype=np.int64, count=len(words))
        split = np.flatnonzero(codes < _SEPARATOR_CODE)
        if split.size:
            codes = _expand_splits(codes, split, vocab.splits)
        boundaries = np.flatnonzero(codes == _SEPARATOR_CODE)
        counts = np.diff(boundaries, prepend=-1, append=len(codes)) - 1
        content = codes[codes != _SEPARATOR_CODE]
        within = np.arange(len(content), dtype=np.int64) - np.repeat(
            np.cumsum(counts) - counts, counts
        )
        keep = limit - 2
        if counts.max(initial=0) > keep:
            content, within = content[within < keep], within[within < keep]
            counts = np.minimum(counts, keep)
        lengths = (counts + 2).astype(np.int32)
        starts = np.cumsum(lengths, dtype=np.int64) - lengths
        ids = np.empty(int(lengths.sum()), dtype=np.int32)
        ids[starts] = fast.start_id
        ids[starts + lengths - 1] = fast.end_id
        ids[np.repeat(starts + 1, counts) + within] = content
        return TokenBatch(ids, lengths)


def _expand_splits(codes: np.ndarray, split: np.ndarray, table: list[np.ndarray]) -> np.ndarray:
    """Replace each multi-piece code by its pieces."""
    pieces = [table[-2 - code] for code in codes[split].tolist()]
    sizes = np.ones(len(codes), dtype=np.int64)
    sizes[split] = [len(piece) for piece in pieces]
    out = np.repeat(codes, sizes)
    starts = np.cumsum(sizes) - sizes
    piece_sizes = sizes[split]
    within = np.arange(int(piece_sizes.sum())) - np.repeat(
        np.cumsum(piece_sizes) - piece_sizes, piece_sizes
    )
    out[np.repeat(starts[split], piece_sizes) + within] = np.concatenate(pieces)
    return out


def _interleave(n: int, *parts: tuple[np.ndarray, TokenBatch]) -> TokenBatch:
    """Merge batches of sequences at the given positions back into one batch of ``n``."""
    lengths = np.zeros(n, dtype=np.int32)
    for where, batch in parts:
        lengths[where] = batch.lengths
    starts = np.cumsum(lengths, dtype=np.int64) - lengths
    ids = np.empty(int(lengths.sum()), dtype=np.int32)
    for where, batch in parts:
        own = batch.lengths.astype(np.int64)
        within = np.arange(int(own.sum())) - np.repeat(np.cumsum(own) - own, own)
        ids[np.repeat(starts[where], own) + within] = batch.ids
    return TokenBatch(ids, lengths)
