"""Publishing order within a partition: each message's answer waits for the ones it follows.

Messages are *taken* in consumption order and may finish in any order; a message publishes only
once the messages it follows have passed their turn. Within a ``(topic, partition)`` a message
belongs to a lane (the request pipeline's model name; ``""`` for none):

- a message of lane ``L`` follows the partition's latest earlier message of ``L`` and its latest
  earlier lane-less one, so a slow model never holds another model's answers;
- a lane-less message follows the latest earlier message of every lane.

A turn passed with a failure (`WorkerUnhealthy`) fails every message waiting on it, so none is
published out of order after a message that could not be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from streams.errors import WorkerUnhealthy

__all__ = ["Turn", "TurnOrder"]

#: (topic, partition)
Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Turn:
    """One message's place in its partition's order."""

    partition: Partition
    lane: str
    #: done once this message has published (or was given up)
    done: asyncio.Future[None]
    #: the turns of the messages it follows
    previous: Sequence[asyncio.Future[None]]

    async def wait_previous(self) -> None:
        """Return once every message this one follows has passed its turn.

        Raises WorkerUnhealthy if one of them could not publish.
        """
        for previous in self.previous:
            await asyncio.shield(previous)


class TurnOrder:
    """Hands out turns per partition and lane, in the order messages are taken."""

    def __init__(self) -> None:
        #: partition -> lane -> the turn of its latest message
        self._tails: dict[Partition, dict[str, asyncio.Future[None]]] = {}

    def take(self, topic: str, partition: int, lane: str = "") -> Turn:
        """The next turn of ``lane`` in ``(topic, partition)``; call in consumption order."""
        key = (topic, partition)
        tails = self._tails.setdefault(key, {})
        if lane:
            previous = [tail for name in (lane, "") if (tail := tails.get(name)) is not None]
        else:
            previous = list(tails.values())
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tails[lane] = done
        return Turn(key, lane, done, previous)

    def pass_turn(self, turn: Turn, failed: WorkerUnhealthy | None = None) -> None:
        """Let the messages that follow ``turn`` go (or fail them with ``failed``)."""
        if not turn.done.done():
            if failed is None:
                turn.done.set_result(None)
            else:
                turn.done.set_exception(WorkerUnhealthy(failed.reason))
                turn.done.exception()  # retrieved: a partition with no next message logs nothing
        tails = self._tails.get(turn.partition)
        if tails is not None and tails.get(turn.lane) is turn.done:
            del tails[turn.lane]
            if not tails:
                del self._tails[turn.partition]
