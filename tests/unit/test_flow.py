"""The in-flight bound, in inputs and tokens: the consumer waits instead of buffering."""

from __future__ import annotations

import asyncio

import pytest

from streams.flow import CHARS_PER_TOKEN, InFlightLimit, estimate_tokens


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


async def test_the_token_bound_holds_long_texts_back_before_the_input_bound() -> None:
    limit = InFlightLimit(1024, token_limit=1000)
    await limit.acquire(4, tokens=900)  # four long texts
    blocked = asyncio.ensure_future(limit.acquire(4, tokens=900))
    await asyncio.sleep(0.01)
    assert not blocked.done()  # 8 inputs is far under 1024, but 1800 tokens is over 1000
    limit.release(4, tokens=900)
    await asyncio.wait_for(blocked, 1)
    assert (limit.in_flight, limit.tokens_in_flight) == (4, 900)


async def test_a_request_over_the_token_bound_passes_alone() -> None:
    limit = InFlightLimit(1024, token_limit=100)
    await limit.acquire(1000, tokens=256_000)
    assert limit.tokens_in_flight == 256_000


def test_estimate_tokens_counts_characters_and_truncation() -> None:
    # 1024 texts of 2000 characters: each is truncated at 256 tokens, not counted 502
    assert estimate_tokens(["x" * 2000] * 1024, max_tokens=256) == 1024 * 256
    assert estimate_tokens(["abcdefgh"], max_tokens=256) == 8 // CHARS_PER_TOKEN + 2
    assert estimate_tokens([], max_tokens=256) == 0


def test_long_texts_are_bounded_to_a_few_seconds_of_model_work() -> None:
    """The issue's case: 1024 long texts are ~60 s of MiniLM on 2 cores; the default bound
    lets in what fits 32768 tokens (~4 s) and the input bound still rules short texts."""
    from streams.settings import Settings

    settings = Settings()
    long_request = estimate_tokens(["word " * 400] * 1024, max(settings.seq_buckets))
    per_text = long_request // 1024
    assert per_text == 256
    assert settings.max_in_flight_tokens // per_text <= 128  # not 1024 of them
    short = estimate_tokens(["This is sentence number 12 about an order."] * 1024, 256)
    assert short <= settings.max_in_flight_tokens  # 1024 short texts: the input bound rules
