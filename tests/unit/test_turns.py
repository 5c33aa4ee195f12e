"""The publishing order within a partition (streams.turns)."""

from __future__ import annotations

import asyncio

import pytest

from streams.errors import WorkerUnhealthy
from streams.turns import TurnOrder


async def finished(awaitable: asyncio.Task[None], within_s: float = 0.05) -> bool:
    """Whether the task completes within ``within_s``."""
    done, _ = await asyncio.wait({awaitable}, timeout=within_s)
    return bool(done)


async def test_a_lane_follows_its_own_earlier_message_only() -> None:
    order = TurnOrder()
    slow = order.take("requests", 0, "minilm")
    other = order.take("requests", 0, "digits")
    later = order.take("requests", 0, "minilm")
    assert await finished(asyncio.create_task(other.wait_previous()))  # digits waits for nothing
    waiting = asyncio.create_task(later.wait_previous())
    assert not await finished(waiting)  # behind the slow minilm message
    order.pass_turn(slow)
    assert await finished(waiting)


async def test_a_laneless_message_follows_every_lane_and_every_lane_follows_it() -> None:
    order = TurnOrder()
    first = order.take("requests", 0, "minilm")
    second = order.take("requests", 0, "digits")
    laneless = order.take("requests", 0)
    after = order.take("requests", 0, "digits")
    assert set(laneless.previous) == {first.done, second.done}
    assert after.previous == [second.done, laneless.done]
    waiting = asyncio.create_task(laneless.wait_previous())
    order.pass_turn(second)
    assert not await finished(waiting)
    order.pass_turn(first)
    assert await finished(waiting)


async def test_partitions_are_independent() -> None:
    order = TurnOrder()
    order.take("requests", 0, "minilm")
    elsewhere = order.take("requests", 1, "minilm")
    other_topic = order.take("orders", 0, "minilm")
    assert elsewhere.previous == []
    assert other_topic.previous == []


async def test_a_failed_turn_fails_the_messages_behind_it() -> None:
    order = TurnOrder()
    failing = order.take("requests", 0, "minilm")
    behind = order.take("requests", 0, "minilm")
    order.pass_turn(failing, WorkerUnhealthy("the response topic refuses every record"))
    with pytest.raises(WorkerUnhealthy, match="refuses every record"):
        await behind.wait_previous()


async def test_a_passed_turn_leaves_no_tail_and_passing_twice_is_harmless() -> None:
    order = TurnOrder()
    turn = order.take("requests", 0, "minilm")
    order.pass_turn(turn)
    order.pass_turn(turn, WorkerUnhealthy("late"))  # already passed: stays a success
    assert turn.done.exception() is None
    assert order.take("requests", 0, "minilm").previous == []  # nothing left to follow
