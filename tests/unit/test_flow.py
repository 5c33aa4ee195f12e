"""The in-flight bound: the consumer side waits instead of buffering without limit."""

from __future__ import annotations

import asyncio

import pytest

from streams.flow import InFlightLimit


async def test_acquire_waits_until_enough_is_released() -> None:
    limit = InFlightLimit(10)
    await limit.acquire(6)
    await limit.acquire(4)
    blocked = asyncio.ensure_future(limit.acquire(3))
    await asyncio.sleep(0.01)
    assert not blocked.done()  # 13 would pass the bound: the agent stops pulling here
    limit.release(2)
    await asyncio.sleep(0.01)
    assert not blocked.done()  # 11 still would
    limit.release(4)
    await asyncio.wait_for(blocked, 1)
    assert limit.in_flight == 7


async def test_an_oversized_request_passes_alone() -> None:
    limit = InFlightLimit(4)
    await limit.acquire(1)
    big = asyncio.ensure_future(limit.acquire(100))
    await asyncio.sleep(0.01)
    assert not big.done()
    limit.release(1)
    await asyncio.wait_for(big, 1)
    assert limit.in_flight == 100


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        InFlightLimit(0)
