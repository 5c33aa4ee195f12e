"""Shape buckets: the smallest length bucket that holds a row, and how rows split into calls.

The runner compiles one executable per (batch bucket, seq bucket); `models.packing` uses these
to lay packed rows out in calls of those shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

__all__ = ["CALL_COST_ROWS", "seq_bucket", "split_batch"]

CALL_COST_ROWS = 1.0
"""Fixed cost of one forward call, in padded rows; measured on CPU at seq 32 (about 4 ms)."""


def seq_bucket(length: int, seq_buckets: Sequence[int]) -> int:
    """Smallest bucket that holds `length` tokens.

    Raises:
        ValueError: `length` exceeds the largest bucket (the tokenizer should have truncated).
    """
    for bucket in sorted(seq_buckets):
        if length <= bucket:
            return bucket
    raise ValueError(f"{length} tokens exceed the largest seq bucket {max(seq_buckets)}")


@cache
def _cover(rows: int, buckets: tuple[int, ...], call_cost: float) -> tuple[int, ...]:
    """Cheapest multiset of buckets (largest first) whose sizes sum to at least `rows`."""
    best: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
    for need in range(1, rows + 1):
        options = []
        for bucket in buckets:
            cost, parts = best[max(0, need - bucket)]
            options.append((cost + bucket + call_cost, (bucket, *parts)))
        cost, parts = min(options, key=lambda option: (option[0], len(option[1])))
        best.append((cost, tuple(sorted(parts, reverse=True))))
    return best[rows][1]


def split_batch(
    rows: int, batch_buckets: Sequence[int], call_cost: float = CALL_COST_ROWS
) -> list[tuple[int, int]]:
    """Split `rows` inputs into calls; returns (padded batch bucket, real rows) per call.

    Full calls use the largest bucket; the remainder takes the set of buckets that minimises
    padded rows plus `call_cost` rows per call (e.g. 20 rows with buckets 1/4/16/32 -> 16 + 4).
    """
    buckets = tuple(sorted(set(batch_buckets)))
    largest = buckets[-1]
    full, rest = divmod(rows, largest)
    sizes = [largest] * full + list(_cover(rest, buckets, call_cost))
    calls: list[tuple[int, int]] = []
    left = rows
    for size in sizes:
        used = min(size, left)
        calls.append((size, used))
        left -= used
    return calls
