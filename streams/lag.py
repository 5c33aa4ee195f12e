"""Consumer lag per partition, in messages and in seconds, and whether the consumer is stalled.

Every ``LAG_INTERVAL_S`` the worker reads, for each request partition it owns, the log end
offset (a ListOffsets request through Faust's consumer thread, so it stays right while Faust
has paused a partition) and the group's committed offset (Faust's record of its own commits;
the partition's earliest offset where nothing is committed yet).

- **lag in messages**: end offset - committed offset: requests not yet answered and committed
  (those in flight included), what ``kafka-consumer-groups --describe`` and KEDA show.
- **lag in seconds**: how long ago the oldest of them was appended. It is read off the history
  of end offsets this tracker keeps (as kafka-lag-exporter does): the committed offset ``c``
  was appended when the end offset passed ``c``, interpolated between the two samples around
  that moment. No message is fetched for it. 0 when nothing waits.
- **stalled**: a partition has lag > 0 and its committed offset has not moved for
  ``KINFER_CONSUMER_STALL_TIMEOUT_S``: requests wait and none is answered. ``/ready`` is false
  while any partition is stalled.

`LagTracker` is pure (tested without Kafka); `read_offsets` is the Faust part.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LAG_INTERVAL_S", "LagTracker", "PartitionLag", "read_offsets", "watch_lag"]

log = logging.getLogger(__name__)

#: How often the worker reads its partitions' offsets.
LAG_INTERVAL_S = 2.0
#: How much end-offset history a partition keeps (the longest lag in seconds it can date
#: exactly; an older backlog reads as at least this old).
HISTORY_S = 900.0
#: Bound on one offsets read through the consumer thread.
READ_TIMEOUT_S = 5.0

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition's lag."""

    topic: str
    partition: int
    messages: int
    seconds: float


@dataclass(slots=True)
class _Run:
    """End offset ``end`` was observed from ``first`` to ``last``."""

    first: float
    last: float
    end: int


@dataclass(slots=True)
class _Partition:
    runs: deque[_Run] = field(default_factory=deque)
    committed: int = 0
    end: int = 0
    #: when the committed offset last moved (or nothing was waiting)
    progressed: float = 0.0
    at: float = 0.0


class LagTracker:
    """End-offset history and committed offsets of the partitions a worker owns."""

    def __init__(self, history_s: float = HISTORY_S) -> None:
        self.history_s = history_s
        self._partitions: dict[TopicPartition, _Partition] = {}

    def observe(self, tp: TopicPartition, end: int, committed: int, now: float) -> None:
        """Record a partition's end offset and committed offset, read at ``now``."""
        state = self._partitions.get(tp)
        if state is None:
            state = self._partitions[tp] = _Partition(committed=committed, progressed=now)
        runs = state.runs
        if runs and runs[-1].end == end:
            runs[-1].last = now
        else:
            runs.append(_Run(now, now, end))
        while len(runs) > 1 and runs[1].first < now - self.history_s:
            runs.popleft()
        if committed != state.committed or committed >= end:
            state.progressed = now
        state.committed, state.end, state.at = committed, end, now

    def retain(self, assigned: Iterable[TopicPartition]) -> None:
        """Forget the partitions no longer assigned (a rebalance took them)."""
        keep = set(assigned)
        for tp in list(self._partitions):
            if tp not in keep:
                del self._partitions[tp]

    def lag(self, tp: TopicPartition) -> PartitionLag:
        """A partition's lag as of its latest read."""
        state = self._partitions[tp]
        waiting = max(0, state.end - state.committed)
        seconds = 0.0 if waiting == 0 else state.at - self._appended_at(state, state.committed)
        return PartitionLag(tp[0], tp[1], waiting, max(0.0, seconds))

    def snapshot(self) -> list[PartitionLag]:
        """Every tracked partition's lag, by topic and partition."""
        return [self.lag(tp) for tp in sorted(self._partitions)]

    def stalled(self, timeout_s: float, now: float) -> str | None:
        """Why the consumer is stalled (a partition waits with no progress), or None."""
        for tp in sorted(self._partitions):
            state = self._partitions[tp]
            idle = now - state.progressed
            if state.end > state.committed and idle > timeout_s:
                return (
                    f"{tp[0]}[{tp[1]}] has {state.end - state.committed} requests waiting and "
                    f"no commit for {idle:.0f}s (KINFER_CONSUMER_STALL_TIMEOUT_S={timeout_s:g})"
                )
        return None

    @staticmethod
    def _appended_at(state: _Partition, offset: int) -> float:
        """When the record at ``offset`` was appended: when the end offset passed it."""
        runs = state.runs
        for index, run in enumerate(runs):
            if run.end > offset:
                if index == 0:
                    return run.first  # before the history began: at least this old
                before = runs[index - 1]
                share = (offset + 1 - before.end) / (run.end - before.end)
                return before.last + (run.first - before.last) * share
        return state.at


async def read_offsets(consumer: Any, topic: str) -> dict[TopicPartition, tuple[int, int]] | None:
    """(end offset, committed offset) of each partition of ``topic`` that ``consumer`` owns.

    ``consumer`` is Faust's (``app.consumer``). None when the consumer cannot say (not
    started, a rebalance in progress, the broker unreachable): the tracker keeps its last view.
    """
    try:
        assigned = [tp for tp in consumer.assignment() if tp.topic == topic]
        if not assigned:
            return {}
        async with asyncio.timeout(READ_TIMEOUT_S):
            ends: Mapping[Any, int] = await consumer.highwaters(*assigned)
            # Faust's record of its commits (next offset to read); None or absent when this
            # worker has seen none for the partition (it then reads from the earliest offset)
            committed: Mapping[Any, int | None] = getattr(consumer, "_committed_offset", {})
            missing = [tp for tp in assigned if not committed.get(tp)]
            earliest: Mapping[Any, int] = (
                await consumer.earliest_offsets(*missing) if missing else {}
            )
    except Exception as exc:  # not started, rebalancing, broker away: try again next time
        log.debug("consumer lag: offsets unavailable: %r", exc)
        return None
    offsets: dict[TopicPartition, tuple[int, int]] = {}
    for tp in assigned:
        end = ends.get(tp)
        done = committed.get(tp) or earliest.get(tp)
        if end is not None and done is not None:
            offsets[(tp.topic, tp.partition)] = (int(end), int(done))
    return offsets


async def watch_lag(
    consumer_of: Callable[[], Any],
    topic: str,
    tracker: LagTracker,
    interval_s: float = LAG_INTERVAL_S,
) -> None:
    """Read ``topic``'s offsets into ``tracker`` every ``interval_s``, until cancelled.

    The reads go through Faust's consumer thread and are bounded (`READ_TIMEOUT_S`): the
    event loop never waits on the broker.
    """
    while True:
        await asyncio.sleep(interval_s)
        offsets = await read_offsets(consumer_of(), topic)
        if offsets is None:
            continue
        now = time.time()
        for tp, (end, committed) in offsets.items():
            tracker.observe(tp, end, committed, now)
        tracker.retain(offsets)
