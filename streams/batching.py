"""Micro-batching across messages and partitions, with deadlines and failure isolation.

Pure asyncio, testable without Kafka or a model: the batcher is handed an ``infer`` coroutine
function that maps a list of texts to one output row per text.

- A batch closes at ``max_batch`` inputs or ``max_wait_s`` after its first input arrived,
  whichever comes first, and earlier when a gathered request's deadline needs it (the nearest
  deadline minus the recent compute time).
- A request with more inputs than ``max_batch`` is split over several batches; a batch may hold
  inputs of many requests.
- A request whose deadline has passed when its batch is about to run is failed with
  ``DeadlineExceeded`` and costs no model time.
- When ``infer`` raises, the batch is split in halves and retried until the failing input is
  isolated: its request gets ``InternalError``, every other request its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.errors import DeadlineExceeded, InternalError, RequestError

log = logging.getLogger(__name__)

#: texts -> (rows, timing). ``rows[i]`` answers ``texts[i]``; timing has tokenize_ms/compute_ms.
InferFn = Callable[[Sequence[str]], Awaitable[tuple[np.ndarray, Mapping[str, float]]]]
Clock = Callable[[], float]
#: A batch with a deadline in it closes at least this long before the deadline.
DEADLINE_MARGIN_S = 0.005


@dataclass(frozen=True, slots=True)
class BatchResult:
    """A request's outputs (one row per input) and where its time went."""

    outputs: np.ndarray
    timing: dict[str, float]


@dataclass(eq=False)
class _Job:
    texts: Sequence[str]
    deadline: float | None
    enqueued_at: float
    future: asyncio.Future[BatchResult]
    rows: list[np.ndarray | None] = field(default_factory=list)
    pending_pieces: int = 0
    timing: dict[str, float] = field(default_factory=dict)

    def fail(self, error: RequestError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass(eq=False, slots=True)
class _Piece:
    job: _Job
    start: int
    texts: Sequence[str]


class MicroBatcher:
    """Gathers inputs from concurrent requests into batches and runs them one at a time."""

    def __init__(
        self,
        infer: InferFn,
        *,
        max_batch: int,
        max_wait_s: float,
        clock: Clock = time.time,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._infer = infer
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._queue: deque[_Piece] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._compute_s = 0.0  # moving average of one batch's model time
        self.batches_run = 0
        self.inputs_run = 0

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        """Stop the loop; requests still queued are failed with InternalError."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._queue:
            self._queue.popleft().job.fail(InternalError("worker stopped before running it"))

    @property
    def queued_inputs(self) -> int:
        """Inputs waiting for a batch."""
        return sum(len(piece.texts) for piece in self._queue)

    # --- submitting -----------------------------------------------------------------------
    async def submit(self, texts: Sequence[str], deadline: float | None = None) -> BatchResult:
        """Run ``texts`` in the coming batches; raises the RequestError that answers them."""
        loop = asyncio.get_running_loop()
        now = self._clock()
        job = _Job(texts=texts, deadline=deadline, enqueued_at=now, future=loop.create_future())
        if deadline is not None and now >= deadline:
            raise DeadlineExceeded((now - deadline) * 1000)
        if not texts:
            return BatchResult(np.zeros((0, 0), np.float32), {"queue_ms": 0.0})
        job.rows = [None] * len(texts)
        for start in range(0, len(texts), self.max_batch):
            self._queue.append(_Piece(job, start, texts[start : start + self.max_batch]))
            job.pending_pieces += 1
        self._arrived.set()
        return await job.future

    # --- the loop -------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                await self._execute(batch)
            except asyncio.CancelledError:
                for piece in batch:
                    piece.job.fail(InternalError("worker stopped while running it"))
                raise
            except Exception as exc:  # never let one batch end the loop
                log.exception("batch failed outside the model")
                for piece in batch:
                    piece.job.fail(InternalError(f"batch failed: {exc!r}"))

    async def _wait_for_input(self, within_s: float | None) -> bool:
        self._arrived.clear()
        if self._queue:
            return True
        try:
            await asyncio.wait_for(self._arrived.wait(), within_s)
        except TimeoutError:
            return False
        return True

    def _cut_time(self, piece: _Piece, opened_at: float) -> float:
        """Latest moment the batch may close for this piece's sake."""
        cut = opened_at + self.max_wait_s
        if piece.job.deadline is not None:
            cut = min(cut, piece.job.deadline - max(self._compute_s, DEADLINE_MARGIN_S))
        return cut

    async def _next_batch(self) -> list[_Piece]:
        while not self._queue:
            await self._wait_for_input(None)
        opened_at = self._clock()
        batch: list[_Piece] = []
        size = 0
        cut_at = float("inf")
        while size < self.max_batch:
            if not self._queue:
                remaining = cut_at - self._clock()
                if remaining <= 0 or not await self._wait_for_input(remaining):
                    break
                continue
            piece = self._queue.popleft()
            if piece.job.future.done():  # failed already through another piece
                piece.job.pending_pieces -= 1
                continue
            room = self.max_batch - size
            if len(piece.texts) > room:
                head = _Piece(piece.job, piece.start, piece.texts[:room])
                tail = _Piece(piece.job, piece.start + room, piece.texts[room:])
                piece.job.pending_pieces += 1
                self._queue.appendleft(tail)
                piece = head
            batch.append(piece)
            size += len(piece.texts)
            cut_at = min(cut_at, self._cut_time(piece, opened_at))
        return batch

    async def _execute(self, batch: list[_Piece]) -> None:
        now = self._clock()
        live: list[_Piece] = []
        for piece in batch:
            job = piece.job
            if job.deadline is not None and now >= job.deadline:
                job.fail(DeadlineExceeded((now - job.deadline) * 1000))
            elif not job.future.done():
                job.timing.setdefault("queue_ms", (now - job.enqueued_at) * 1000)
                live.append(piece)
        if live:
            await self._run_isolating(live)

    async def _run_isolating(self, pieces: list[_Piece]) -> None:
        texts = [text for piece in pieces for text in piece.texts]
        started = time.perf_counter()
        try:
            rows, timing = await self._infer(texts)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._isolate_failure(pieces, exc)
            return
        elapsed = time.perf_counter() - started
        first = self.batches_run == 0
        self._compute_s = elapsed if first else 0.8 * self._compute_s + 0.2 * elapsed
        self.batches_run += 1
        self.inputs_run += len(texts)
        offset = 0
        for piece in pieces:
            self._deliver(piece, rows[offset : offset + len(piece.texts)], timing, len(texts))
            offset += len(piece.texts)

    async def _isolate_failure(self, pieces: list[_Piece], exc: Exception) -> None:
        if len(pieces) == 1 and len(pieces[0].texts) == 1:
            piece = pieces[0]
            log.warning("model failed on one input (inputs[%d]): %r", piece.start, exc)
            piece.job.fail(InternalError(f"model failed on inputs[{piece.start}]: {exc!r}"))
            return
        if len(pieces) == 1:
            piece = pieces[0]
            mid = len(piece.texts) // 2
            piece.job.pending_pieces += 1
            halves = [
                [_Piece(piece.job, piece.start, piece.texts[:mid])],
                [_Piece(piece.job, piece.start + mid, piece.texts[mid:])],
            ]
        else:
            mid = len(pieces) // 2
            halves = [pieces[:mid], pieces[mid:]]
        for half in halves:
            alive = [piece for piece in half if not piece.job.future.done()]
            if alive:
                await self._run_isolating(alive)

    def _deliver(
        self, piece: _Piece, rows: np.ndarray, timing: Mapping[str, float], batch_size: int
    ) -> None:
        job = piece.job
        if job.future.done():
            return
        for index, row in enumerate(rows):
            job.rows[piece.start + index] = row
        for name in ("tokenize_ms", "compute_ms"):
            job.timing[name] = job.timing.get(name, 0.0) + float(timing.get(name, 0.0))
        job.timing["batch_size"] = max(job.timing.get("batch_size", 0), batch_size)
        job.pending_pieces -= 1
        if job.pending_pieces == 0:
            outputs = np.stack([row for row in job.rows if row is not None])
            job.future.set_result(BatchResult(outputs, job.timing))


def describe(result: BatchResult) -> dict[str, Any]:
    """Timing of a result, rounded for the wire."""
    return {name: round(value, 3) for name, value in result.timing.items()}
