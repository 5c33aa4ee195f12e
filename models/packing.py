"""Sequence packing: several token sequences share one row, so the model computes real tokens.

A batch of token sequences (`TokenBatch`: every sequence's ids back to back) becomes a few
forward calls (`PackedCall`), each of a compiled (rows, length) shape. Inside a row, sequences
sit side by side as segments: ``segment_ids`` numbers them 1, 2, ... (0 is padding),
``position_ids`` restart at 0 for each, and the model attends only within a segment and pools
per segment, so a sequence's embedding does not depend on its neighbours.

Packing is first-fit decreasing (longest first, each into the first row with room), done per
group of equal lengths so its cost grows with distinct lengths and rows, not with sequences.
A row opens at ``pack_length`` tokens (or the smallest length bucket that holds a longer
sequence); rows are then sorted by fill and cut into calls of the batch buckets, each call
padded to the smallest length bucket that holds its fullest row. Pure numpy: no JAX here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from models.bucketing import seq_bucket, split_batch

__all__ = ["PackedCall", "TokenBatch", "max_segments", "pack"]


@dataclass(frozen=True, slots=True)
class TokenBatch:
    """Token sequences back to back: ``ids[offsets[i]:offsets[i] + lengths[i]]`` is text i."""

    ids: np.ndarray  # int32 (total,)
    lengths: np.ndarray  # int32 (n,), special tokens included

    @property
    def offsets(self) -> np.ndarray:
        """Start of each sequence in ``ids``."""
        offsets = np.zeros(len(self.lengths), dtype=np.int64)
        np.cumsum(self.lengths[:-1], out=offsets[1:])
        return offsets

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def costs(self) -> np.ndarray:
        """Each sequence's cost to a batch: its token count."""
        return self.lengths

    @property
    def total_tokens(self) -> int:
        """Real tokens in the batch."""
        return int(self.lengths.sum())

    def sequence(self, index: int) -> np.ndarray:
        """The ids of sequence ``index``."""
        start = int(self.lengths[:index].sum())
        return self.ids[start : start + int(self.lengths[index])]

    def slice(self, start: int, stop: int) -> TokenBatch:
        """Sequences ``start`` up to ``stop`` (no copy)."""
        offsets = self.offsets
        first = int(offsets[start]) if start < len(self) else int(self.lengths.sum())
        last = int(offsets[stop - 1] + self.lengths[stop - 1]) if stop > start else first
        return TokenBatch(self.ids[first:last], self.lengths[start:stop])

    @staticmethod
    def concat(parts: Sequence[TokenBatch]) -> TokenBatch:
        """One batch holding every part's sequences, in order."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return TokenBatch(np.zeros(0, np.int32), np.zeros(0, np.int32))
        return TokenBatch(
            np.concatenate([part.ids for part in parts]),
            np.concatenate([part.lengths for part in parts]),
        )


@dataclass(frozen=True, slots=True)
class PackedCall:
    """One forward call: packed (rows, length) arrays and where each sequence's output is."""

    input_ids: np.ndarray  # int32 (rows, length)
    segment_ids: np.ndarray  # int32 (rows, length): 0 padding, 1.. segment within its row
    position_ids: np.ndarray  # int32 (rows, length): restart at 0 in each segment
    sequences: np.ndarray  # int64 (k,): which sequences of the batch this call computes
    output_rows: np.ndarray  # int64 (k,): their rows in the model's (rows * segments) output
    real_tokens: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, length): the compiled shape this call uses."""
        rows, length = self.input_ids.shape
        return int(rows), int(length)

    @property
    def computed_tokens(self) -> int:
        """rows x length: the tokens the model computes, padding included."""
        rows, length = self.shape
        return rows * length


#: Segments per row are capped at length / SEGMENT_TOKENS (at least MIN_SEGMENT_CAP): the model
#: returns rows x segments output slots, and an uncapped count (length / 2 for BERT) would make
#: that output, and its copy to the host, several times larger than the useful rows.
SEGMENT_TOKENS = 8
MIN_SEGMENT_CAP = 4


def max_segments(length: int, min_tokens: int) -> int:
    """Most segments a row of ``length`` tokens holds (the model's output slots per row)."""
    fits = max(1, length // max(1, min_tokens))
    return min(fits, max(MIN_SEGMENT_CAP, length // SEGMENT_TOKENS))


@cache
def _segment_caps(buckets: tuple[int, ...], min_tokens: int) -> list[int]:
    """caps[f]: output slots of the shortest call that holds a row filled to f tokens."""
    return [
        max_segments(seq_bucket(max(fill, 1), buckets), min_tokens)
        for fill in range(buckets[-1] + 1)
    ]


def _fitting(count: int, segments: int, fill: int, length: int, cap_at: list[int]) -> int:
    """Most of ``count`` sequences of ``length`` a row (``segments``, ``fill``) can take."""
    while count and segments + count > cap_at[fill + count * length]:
        count -= 1
    return count


def _first_fit_decreasing(
    lengths: np.ndarray, capacity_for: dict[int, int], cap_at: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Place sequences in rows; returns per-sequence row, start, segment and each row's fill.

    A row filled to ``f`` tokens holds at most ``cap_at[f]`` sequences: the output slots of the
    shortest call that can hold it.
    """
    n = len(lengths)
    order = np.argsort(-lengths, kind="stable")
    distinct, counts = np.unique(-lengths, return_counts=True)  # longest first
    row_capacity: list[int] = []
    row_fill: list[int] = []
    row_segments: list[int] = []
    open_rows: list[int] = []  # rows that still have room for the shortest sequence
    placements: list[tuple[int, int, int, int, int]] = []  # row, start, segment, length, count
    shortest = int(lengths.min()) if n else 0
    for negative, count in zip(distinct.tolist(), counts.tolist(), strict=True):
        length = -negative
        left = count
        still_open: list[int] = []
        for row in open_rows:
            if left:
                room = (row_capacity[row] - row_fill[row]) // length
                fits = _fitting(min(room, left), row_segments[row], row_fill[row], length, cap_at)
                if fits:
                    placements.append((row, row_fill[row], row_segments[row], length, fits))
                    row_fill[row] += fits * length
                    row_segments[row] += fits
                    left -= fits
            if row_capacity[row] - row_fill[row] >= shortest:
                still_open.append(row)
        open_rows = still_open
        capacity = capacity_for[length]
        while left:
            fits = max(1, _fitting(min(capacity // length, left), 0, 0, length, cap_at))
            row = len(row_fill)
            row_capacity.append(capacity)
            row_fill.append(fits * length)
            row_segments.append(fits)
            placements.append((row, 0, 0, length, fits))
            if capacity - fits * length >= shortest:
                open_rows.append(row)
            left -= fits
    table = np.asarray(placements, dtype=np.int64).reshape(-1, 5)
    rows, starts, segments, lens, counts = table.T
    within = np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    row_of = np.empty(n, np.int64)
    start_of = np.empty(n, np.int64)
    segment_of = np.empty(n, np.int64)
    row_of[order] = np.repeat(rows, counts)
    start_of[order] = np.repeat(starts, counts) + within * np.repeat(lens, counts)
    segment_of[order] = np.repeat(segments, counts) + within
    return row_of, start_of, segment_of, row_fill


def pack(
    tokens: TokenBatch,
    *,
    batch_buckets: Sequence[int],
    seq_buckets: Sequence[int],
    pack_length: int,
    min_tokens: int,
    pad_id: int,
    call_cost_rows: float = 1.0,
) -> list[PackedCall]:
    """Pack ``tokens`` into forward calls of (batch bucket, seq bucket) shapes.

    Raises:
        ValueError: a sequence longer than the largest seq bucket (truncate first).
    """
    if len(tokens) == 0:
        return []
    lengths = tokens.lengths.astype(np.int64)
    buckets = tuple(sorted(seq_buckets))
    if int(lengths.min()) < min_tokens:
        raise ValueError(f"a sequence has fewer than min_tokens={min_tokens} tokens")
    opening = min(pack_length, buckets[-1])
    capacity_for = {
        int(length): seq_bucket(max(int(length), opening), buckets)
        for length in np.unique(lengths).tolist()
    }
    cap_at = _segment_caps(buckets, min_tokens)
    row_of, start_of, segment_of, row_fill = _first_fit_decreasing(lengths, capacity_for, cap_at)
    fills = np.asarray(row_fill, dtype=np.int64)
    by_fill = np.argsort(-fills, kind="stable")  # fullest rows first
    shapes: list[tuple[int, int]] = []
    call_of_row = np.empty(len(fills), dtype=np.int64)
    local_row = np.empty(len(fills), dtype=np.int64)
    first = 0
    for batch, used in split_batch(len(fills), batch_buckets, call_cost_rows):
        rows = by_fill[first : first + used]
        first += used
        call_of_row[rows] = len(shapes)
        local_row[rows] = np.arange(used)
        shapes.append((batch, seq_bucket(int(fills[rows[0]]), buckets)))
    # One scatter fills every call's arrays: calls lie back to back in one flat buffer.
    sizes = np.asarray([batch * length for batch, length in shapes], dtype=np.int64)
    bases = np.cumsum(sizes) - sizes
    row_lengths = np.asarray([length for _, length in shapes], dtype=np.int64)
    slots = np.asarray([max_segments(length, min_tokens) for _, length in shapes], np.int64)
    call = call_of_row[row_of]
    row = local_row[row_of]
    within = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(
        np.cumsum(lengths) - lengths, lengths
    )
    source = np.repeat(tokens.offsets, lengths) + within
    target = np.repeat(bases[call] + row * row_lengths[call] + start_of, lengths) + within
    total = int(sizes.sum())
    input_ids = np.full(total, pad_id, dtype=np.int32)
    segment_ids = np.zeros(total, dtype=np.int32)
    position_ids = np.zeros(total, dtype=np.int32)
    input_ids[target] = tokens.ids[source]
    segment_ids[target] = np.repeat(segment_of + 1, lengths)
    position_ids[target] = within
    output_rows = row * slots[call] + segment_of
    by_call = np.argsort(call, kind="stable")
    counts = np.bincount(call, minlength=len(shapes))
    real = np.bincount(call, weights=lengths, minlength=len(shapes))
    bounds = np.cumsum(counts) - counts
    calls: list[PackedCall] = []
    for index, (batch, length) in enumerate(shapes):
        region = slice(int(bases[index]), int(bases[index] + sizes[index]))
        members = by_call[bounds[index] : bounds[index] + counts[index]]
        calls.append(
            PackedCall(
                input_ids=input_ids[region].reshape(batch, length),
                segment_ids=segment_ids[region].reshape(batch, length),
                position_ids=position_ids[region].reshape(batch, length),
                sequences=members,
                output_rows=output_rows[members],
                real_tokens=int(real[index]),
            )
        )
    return calls
