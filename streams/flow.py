"""Flow control: a bound on the inputs accepted but not yet answered."""

from __future__ import annotations

import asyncio


class InFlightLimit:
    """A weighted semaphore: ``acquire(n)`` waits while ``n`` more would pass the limit.

    A single acquisition larger than the whole limit is let through when nothing else is in
    flight, so an oversized (but valid) request is served alone rather than blocking forever.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.in_flight = 0
        self._released = asyncio.Event()

    def _fits(self, weight: int) -> bool:
        return self.in_flight == 0 or self.in_flight + weight <= self.limit

    async def acquire(self, weight: int) -> None:
        """Wait for room for ``weight`` more, then take it."""
        while not self._fits(weight):
            self._released.clear()
            await self._released.wait()
        self.in_flight += weight

    def release(self, weight: int) -> None:
        """Give back what an ``acquire`` took."""
        self.in_flight -= weight
        self._released.set()
