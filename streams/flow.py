"""Flow control: a bound on the work accepted but not yet answered, in inputs and in tokens.

Counting inputs alone is not enough: 1 024 texts of 256 tokens are about 60 s of MiniLM on two
CPU cores, 1 024 short ones 2 s. The token bound keeps what a worker holds to a few seconds of
model work whatever the texts, which bounds how long a rebalance or a graceful stop waits for it.
Tokens are estimated before tokenising, from the characters (:func:`estimate_tokens`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

#: Characters per token of the estimate: English WordPiece text has 4 to 5; fewer for other
#: scripts, so this errs towards counting too many.
CHARS_PER_TOKEN = 4
#: Special tokens a text gets on top of its own ([CLS] and [SEP]).
SPECIAL_TOKENS = 2


def estimate_tokens(texts: Sequence[str], max_tokens: int) -> int:
    """Estimated tokens the model computes for ``texts``, each truncated at ``max_tokens``."""
    if not texts:
        return 0
    if max(map(len, texts)) // CHARS_PER_TOKEN + SPECIAL_TOKENS <= max_tokens:
        # none is truncated (the usual case): two passes in C, no array
        return sum(map(len, texts)) // CHARS_PER_TOKEN + SPECIAL_TOKENS * len(texts)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    tokens = np.minimum(lengths // CHARS_PER_TOKEN + SPECIAL_TOKENS, max_tokens)
    return int(tokens.sum())


class InFlightLimit:
    """A weighted semaphore over inputs and tokens: ``acquire(n, tokens)`` waits while taking
    them would pass either limit.

    A single acquisition larger than a whole limit is let through when nothing else is in
    flight, so an oversized (but valid) request is served alone rather than blocking forever.
    """

    def __init__(self, limit: int, token_limit: int | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if token_limit is not None and token_limit < 1:
            raise ValueError("token_limit must be at least 1")
        self.limit = limit
        self.token_limit = token_limit
        self.in_flight = 0
        self.tokens_in_flight = 0
        self._released = asyncio.Event()

    def _fits(self, weight: int, tokens: int) -> bool:
        if self.in_flight == 0:
            return True
        if self.in_flight + weight > self.limit:
            return False
        return self.token_limit is None or self.tokens_in_flight + tokens <= self.token_limit

    async def acquire(self, weight: int, tokens: int = 0) -> None:
        """Wait for room for ``weight`` more inputs and ``tokens`` more tokens, then take it."""
        while not self._fits(weight, tokens):
            self._released.clear()
            await self._released.wait()
        self.in_flight += weight
        self.tokens_in_flight += tokens

    def release(self, weight: int, tokens: int = 0) -> None:
        """Give back what an ``acquire`` took."""
        self.in_flight -= weight
        self.tokens_in_flight -= tokens
        self._released.set()
