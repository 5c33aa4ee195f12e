"""Sequence packing (pure numpy): placement, arrays, shapes and padding efficiency."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.packing import PackedCall, TokenBatch, max_segments, pack

BATCH = (1, 4, 16)
SEQ = (16, 32, 64, 128, 256)


def batch_of(lengths: list[int]) -> TokenBatch:
    """Sequence i holds ids 1000*i + 0, 1, 2, ... so every token is traceable."""
    ids = [1000 * i + j for i, n in enumerate(lengths) for j in range(n)]
    return TokenBatch(np.asarray(ids, np.int32), np.asarray(lengths, np.int32))


def packed(lengths: list[int], **kwargs: int) -> list[PackedCall]:
    options = {"pack_length": 128, "min_tokens": 1, "pad_id": 0, **kwargs}
    return pack(batch_of(lengths), batch_buckets=BATCH, seq_buckets=SEQ, **options)


def check(lengths: list[int], calls: list[PackedCall], min_tokens: int = 1) -> None:
    """Every sequence is in exactly one call, whole, in order, as its own segment."""
    seen = np.concatenate([call.sequences for call in calls]) if calls else np.zeros(0)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for call in calls:
        rows, length = call.shape
        assert rows in BATCH
        assert length in SEQ
        segments = max_segments(length, min_tokens)
        assert len(set(call.output_rows.tolist())) == len(call.sequences)
        for sequence, slot in zip(call.sequences.tolist(), call.output_rows.tolist(), strict=True):
            row, segment = divmod(slot, segments)
            where = call.segment_ids[row] == segment + 1
            assert call.input_ids[row][where].tolist() == [
                1000 * sequence + j for j in range(lengths[sequence])
            ]
            assert call.position_ids[row][where].tolist() == list(range(lengths[sequence]))
        assert call.real_tokens == int((call.segment_ids > 0).sum())
        assert (call.input_ids[call.segment_ids == 0] == 0).all()


def test_short_sequences_share_rows() -> None:
    calls = packed([18] * 64)
    check([18] * 64, calls)
    # 7 per 128-token row: 9 full rows and one with a single sequence, padded to 32 only
    assert [call.shape for call in calls] == [(4, 128), (4, 128), (1, 128), (1, 32)]
    real = sum(call.real_tokens for call in calls)
    computed = sum(call.computed_tokens for call in calls)
    assert real == 64 * 18
    assert real / computed > 0.97


def test_a_long_sequence_opens_a_long_row_and_short_ones_fill_it() -> None:
    lengths = [200, 30, 20, 3]
    calls = packed(lengths)
    check(lengths, calls)
    assert [call.shape for call in calls] == [(1, 256)]
    assert calls[0].real_tokens == 253


def test_first_fit_decreasing_places_the_longest_first() -> None:
    calls = packed([60, 70, 50, 10], pack_length=128)
    check([60, 70, 50, 10], calls)
    # 70 opens row A, 60 opens row B (70 + 60 > 128), 50 joins A (120), 10 joins B (70)
    where = {}
    for index, call in enumerate(calls):
        segments = max_segments(call.shape[1], 1)
        for sequence, slot in zip(call.sequences.tolist(), call.output_rows.tolist(), strict=True):
            where[sequence] = (index, slot // segments)
    assert where[1] == where[2] != where[0] == where[3]
    assert [call.real_tokens for call in calls] == [120, 70]  # fullest row first


def test_segments_per_row_follow_min_tokens() -> None:
    lengths = [2] * 40
    calls = packed(lengths, min_tokens=2, pack_length=64)
    check(lengths, calls, min_tokens=2)


def test_a_sequence_shorter_than_min_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="fewer than min_tokens=2"):
        packed([5, 1], min_tokens=2)


def test_a_sequence_longer_than_the_largest_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="exceed the largest seq bucket"):
        packed([300])


def test_empty_batch() -> None:
    assert packed([]) == []


def test_mixed_lengths_pack_at_least_ninety_percent_real_tokens() -> None:
    rng = np.random.default_rng(7)
    lengths = rng.integers(5, 121, size=256).tolist()
    calls = packed(lengths)
    check(lengths, calls)
    efficiency = sum(c.real_tokens for c in calls) / sum(c.computed_tokens for c in calls)
    assert efficiency >= 0.9


def test_token_batch_slices_and_concatenates() -> None:
    tokens = batch_of([3, 1, 4, 2])
    middle = tokens.slice(1, 3)
    assert middle.lengths.tolist() == [1, 4]
    assert middle.ids.tolist() == [1000, 2000, 2001, 2002, 2003]
    assert tokens.slice(4, 4).ids.tolist() == []
    again = TokenBatch.concat([tokens.slice(0, 1), middle, tokens.slice(3, 4)])
    assert again.ids.tolist() == tokens.ids.tolist()
    assert again.lengths.tolist() == tokens.lengths.tolist()
    assert tokens.sequence(2).tolist() == [2000, 2001, 2002, 2003]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=256), min_size=1, max_size=120),
    st.sampled_from([16, 64, 128, 256]),
)
def test_every_sequence_is_packed_once_and_whole(lengths: list[int], pack_length: int) -> None:
    check(lengths, packed(lengths, pack_length=pack_length))
