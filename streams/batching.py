"""Micro-batching across messages and partitions, by count, token budget, wait and deadline.

Pure asyncio, testable without Kafka or a model. The batcher drives a `BatchModel` in two
stages, as text-embeddings-inference does:

1. **prepare** (tokenise): every request submitted while the previous prepare call ran is
   prepared in one call, off the event loop. A prepared request knows each input's cost
   (its token count for text, 1 for inputs that need no preparation).
2. **pack**: prepared inputs are gathered into batches, and a closed batch is packed for the
   device while the batch before it computes.
3. **compute**: one batch at a time.

Batch rules:
- A batch closes at ``max_batch`` inputs or ``max_batch_tokens`` of cost, whichever comes
  first; an input that alone costs more than the budget runs in a batch of its own.
- Otherwise it closes ``max_wait_s`` after its first input arrived; while another batch is
  computing it keeps filling until that batch is about to finish (its recent compute time
  says when), since closing earlier only makes it smaller.
- It closes earlier when a gathered request's deadline needs it (the nearest deadline minus
  the recent compute time).
- A request larger than a batch is split over several batches; a batch may hold inputs of
  many requests, and rows come back in each request's input order.
- A request whose deadline has passed when its batch is about to run is failed with
  ``DeadlineExceeded`` and costs no model time.
- A request whose deadline passes while its packed batch waits for the device is failed
  then too (the rest of its batch is packed again without it).
- When ``pack`` or ``compute`` raises, the batch is split in halves and retried until the
  failing input is isolated: its request gets ``InternalError``, every other request its
  result. A failing ``prepare`` fails only the requests it cannot prepare.
- A systemic failure is not bisected: an error that says the model cannot run anything
  (:func:`streams.errors.is_systemic`: out of memory, a closed runner), or
  ``SYSTEMIC_AFTER_FAILED_BATCHES`` batches in a row in which every input failed. The batcher
  then records a ``failure``, and fails every request it holds, and every later one, with
  ``WorkerUnhealthy``, which is never an answer: those requests stay uncommitted for the next
  worker.
- ``stalled_s()`` says how long the oldest model call now running has run (a hung model).

No per-input Python work happens on the event loop: inputs move as slices of prepared
batches, costs are summed and cut with numpy, and rows are copied per slice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from streams.batch_jobs import BatchResult, Job, Piece
from streams.batch_model import BatchModel
from streams.errors import (
    DeadlineExceeded,
    InternalError,
    WorkerUnhealthy,
    error_reference,
    is_systemic,
)
from streams.observe import BatchObserver

__all__ = ["MicroBatcher"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
#: A batch with a deadline in it closes at least this long before the deadline.
DEADLINE_MARGIN_S = 0.005
#: Batches in flight: one computing, one packed and waiting for the device.
BATCHES_IN_FLIGHT = 2
#: Batches in a row failing on every input after which the model is deemed broken as a whole.
SYSTEMIC_AFTER_FAILED_BATCHES = 3


class MicroBatcher:
    """Gathers inputs from concurrent requests into batches and runs them."""

    def __init__(
        self,
        model: BatchModel,
        *,
        max_batch: int,
        max_wait_s: float,
        max_batch_tokens: int | None = None,
        clock: Clock = time.time,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be at least 1")
        self._model = model
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._incoming: list[Job] = []
        self._incoming_ready = asyncio.Event()
        self._queue: deque[Piece] = deque()
        self._changed = asyncio.Event()  # inputs arrived or a batch finished
        self._slots = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._running = 0  # batches packing, packed or computing
        self._compute_lock = asyncio.Lock()
        self._busy_until = 0.0  # when the batch computing now is expected to finish
        self._compute_s = 0.0  # moving average of one batch's model time
        self.batches_run = 0
        self.inputs_run = 0
        self._failed_batches = 0  # batches in a row in which every input failed
        self._busy_since: dict[object, float] = {}  # model calls running -> when they started
        #: why the model cannot serve any more (a systemic failure), or None
        self.failure: str | None = None
        #: told about every batch the model computed (the metrics set it; streams.observe)
        self.observer: BatchObserver | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the prepare and batching loops on the running event loop."""
        if not self._loops:
            loop = asyncio.get_running_loop()
            self._loops = [
                loop.create_task(self._prepare_loop(), name="batcher-prepare"),
                loop.create_task(self._batch_loop(), name="batcher"),
            ]

    async def stop(self) -> None:
        """Stop the loops; requests not yet answered are failed with InternalError."""
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops = []
        for job in self._incoming:
            job.fail(InternalError("worker stopped before running it"))
        self._incoming.clear()
        while self._queue:
            self._queue.popleft().job.fail(InternalError("worker stopped before running it"))

    # --- health ---------------------------------------------------------------------------
    def stalled_s(self) -> float:
        """How long the oldest model call now running (prepare, pack, compute) has run."""
        if not self._busy_since:
            return 0.0
        return time.monotonic() - min(self._busy_since.values())

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        token = object()
        self._busy_since[token] = time.monotonic()
        try:
            yield
        finally:
            del self._busy_since[token]

    def _declare_unhealthy(self, reason: str) -> None:
        """The model cannot serve: fail everything held, and everything later, unanswered."""
        if self.failure is None:
            self.failure = reason
            log.error(
                "the model cannot serve any more (%s): requests are left unanswered and "
                "uncommitted from now on",
                reason,
            )
        error = WorkerUnhealthy(self.failure)
        for job in self._incoming:
            job.fail(error)
        self._incoming.clear()
        while self._queue:
            self._queue.popleft().job.fail(error)

    # --- submitting -----------------------------------------------------------------------
    async def submit(self, inputs: Sequence[Any], deadline: float | None = None) -> BatchResult:
        """Run ``inputs`` in the coming batches; raises the RequestError that answers them."""
        if self.failure is not None:
            raise WorkerUnhealthy(self.failure)
        now = self._clock()
        if deadline is not None and now >= deadline:
            raise DeadlineExceeded((now - deadline) * 1000)
        if len(inputs) == 0:
            return BatchResult(np.zeros((0, 0), np.float32), {"queue_ms": 0.0})
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._incoming.append(Job(inputs, deadline, now, future))
        self._incoming_ready.set()
        return await future

    # --- stage 1: prepare -----------------------------------------------------------------
    async def _prepare_loop(self) -> None:
        while True:
            while not self._incoming:
                self._incoming_ready.clear()
                await self._incoming_ready.wait()
            jobs, self._incoming = self._incoming, []
            jobs = [job for job in jobs if not job.future.done()]
            if jobs:
                await self._prepare(jobs)

    async def _prepare(self, jobs: list[Job]) -> None:
        if self.failure is not None:
            for job in jobs:
                job.fail(WorkerUnhealthy(self.failure))
            return
        try:
            with self._busy():
                prepared, timing = await self._model.prepare([job.inputs for job in jobs])
        except asyncio.CancelledError:
            for job in jobs:
                job.fail(InternalError("worker stopped while preparing it"))
            raise
        except Exception as exc:
            if is_systemic(exc):
                self._declare_unhealthy(f"preparing inputs failed: {exc!r}")
                for job in jobs:
                    job.fail(WorkerUnhealthy(f"preparing inputs failed: {exc!r}"))
                return
            if len(jobs) == 1:
                reference = error_reference()
                log.warning("preparing a request failed (error reference %s): %r", reference, exc)
                jobs[0].fail(InternalError("preparing the inputs failed", reference))
                return
            for job in jobs:  # isolate the request that cannot be prepared
                await self._prepare([job])
            return
        share = float(timing.get("tokenize_ms", 0.0))
        for job, inputs in zip(jobs, prepared, strict=True):
            job.timing["tokenize_ms"] = share
            job.pending_pieces = 1
            self._queue.append(Piece(job, 0, inputs))
        self._changed.set()

    # --- stage 2: batch and run -----------------------------------------------------------
    async def _batch_loop(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._execute_and_release(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute_and_release(self, batch: list[Piece]) -> None:
        try:
            await self._execute(batch)
        except asyncio.CancelledError:
            for piece in batch:
                piece.job.fail(InternalError("worker stopped while running it"))
            raise
        except Exception:  # never let one batch end the loop
            reference = error_reference()
            log.exception("batch failed outside the model (error reference %s)", reference)
            for piece in batch:
                piece.job.fail(InternalError("the batch failed", reference))
        finally:
            self._running -= 1
            self._slots.release()
            self._changed.set()

    async def _wait_for_change(self, within_s: float | None) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), within_s)

    def _close_at(self, opened_at: float, deadline_cut: float) -> float:
        """When the open batch closes if it does not fill up first."""
        close = opened_at + self.max_wait_s
        if self._running:  # a batch is computing: fill until it is about to finish
            close = max(close, self._busy_until - DEADLINE_MARGIN_S)
        return min(close, deadline_cut)

    def _deadline_cut(self, piece: Piece) -> float:
        if piece.job.deadline is None:
            return float("inf")
        return piece.job.deadline - max(self._compute_s, DEADLINE_MARGIN_S)

    async def _next_batch(self) -> list[Piece]:
        while not self._queue:
            await self._wait_for_change(None)
        opened_at = self._clock()
        batch: list[Piece] = []
        size = 0
        cost = 0
        budget = self.max_batch_tokens
        deadline_cut = float("inf")
        while size < self.max_batch and (budget is None or cost < budget):
            if not self._queue:
                remaining = self._close_at(opened_at, deadline_cut) - self._clock()
                if remaining <= 0:
                    break
                await self._wait_for_change(remaining)
                continue
            piece = self._queue.popleft()
            if piece.job.future.done():  # failed already through another piece
                piece.job.pending_pieces -= 1
                continue
            room = self.max_batch - size
            if budget is not None:
                costs = np.cumsum(piece.prepared.costs)
                fits = int(np.searchsorted(costs, budget - cost, side="right"))
                if fits == 0 and not batch:
                    fits = 1  # one input over the whole budget runs alone
                room = min(room, fits)
                if room == 0:
                    self._queue.appendleft(piece)
                    break
                cost += int(costs[min(room, len(costs)) - 1])
            if len(piece) > room:
                piece, tail = piece.split(room)
                self._queue.appendleft(tail)
            batch.append(piece)
            size += len(piece)
            deadline_cut = min(deadline_cut, self._deadline_cut(piece))
        return batch

    def _live(self, pieces: list[Piece]) -> list[Piece]:
        """The pieces still to run: fails those whose deadline has passed."""
        now = self._clock()
        live: list[Piece] = []
        for piece in pieces:
            job = piece.job
            if job.deadline is not None and now >= job.deadline:
                job.fail(DeadlineExceeded((now - job.deadline) * 1000))
            elif not job.future.done():
                job.timing.setdefault("queue_ms", (now - job.enqueued_at) * 1000)
                live.append(piece)
        return live

    async def _execute(self, batch: list[Piece]) -> None:
        live = self._live(batch)
        if not live:
            return
        packed: Any = None
        if self.failure is None:
            try:
                with self._busy():
                    packed = await self._model.pack([piece.prepared for piece in live])
            except asyncio.CancelledError:
                raise
            except Exception:
                packed = None  # packed again, and isolated, below
        async with self._compute_lock:
            still = self._live(live)
            if still and self.failure is not None:
                for piece in still:
                    piece.job.fail(WorkerUnhealthy(self.failure))
            elif still:
                answered, failed = await self._run_isolating(
                    still, packed if len(still) == len(live) else None
                )
                self._count_failed_batch(answered, failed)

    def _count_failed_batch(self, answered: int, failed: int) -> None:
        """After a batch: is the model failing on everything, batch after batch?"""
        if answered or not failed:
            self._failed_batches = 0
            return
        self._failed_batches += 1
        if self._failed_batches >= SYSTEMIC_AFTER_FAILED_BATCHES and self.failure is None:
            self._declare_unhealthy(
                f"{self._failed_batches} batches in a row failed on every input"
            )

    async def _run_isolating(self, pieces: list[Piece], packed: Any = None) -> tuple[int, int]:
        """Compute ``pieces`` (packing them first unless given); isolate a failure.

        Returns how many inputs got their rows and how many failed.
        """
        size = sum(len(piece) for piece in pieces)
        try:
            with self._busy():
                if packed is None:
                    packed = await self._model.pack([piece.prepared for piece in pieces])
                started = time.perf_counter()
                if self.batches_run:
                    self._busy_until = self._clock() + self._compute_s
                rows, timing = await self._model.compute(packed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_systemic(exc):
                self._declare_unhealthy(f"the model failed: {exc!r}")
                for piece in pieces:
                    piece.job.fail(WorkerUnhealthy(f"the model failed: {exc!r}"))
                return 0, 0
            return await self._isolate_failure(pieces, exc)
        elapsed = time.perf_counter() - started
        first = self.batches_run == 0
        self._compute_s = elapsed if first else 0.8 * self._compute_s + 0.2 * elapsed
        self.batches_run += 1
        self.inputs_run += size
        if self.observer is not None:
            self.observer(size, {"compute_ms": elapsed * 1e3, **timing})  # the model's wins
        offset = 0
        for piece in pieces:
            self._deliver(piece, rows[offset : offset + len(piece)], timing, size)
            offset += len(piece)
        return size, 0

    async def _isolate_failure(self, pieces: list[Piece], exc: Exception) -> tuple[int, int]:
        if len(pieces) == 1 and len(pieces[0]) == 1:
            piece = pieces[0]
            reference = error_reference()
            log.warning(
                "model failed on one input (inputs[%d], error reference %s): %r",
                piece.start,
                reference,
                exc,
            )
            piece.job.fail(InternalError(f"the model failed on inputs[{piece.start}]", reference))
            return 0, 1
        if len(pieces) == 1:
            halves = [[half] for half in pieces[0].split(len(pieces[0]) // 2)]
        else:
            mid = len(pieces) // 2
            halves = [pieces[:mid], pieces[mid:]]
        answered = failed = 0
        for half in halves:
            alive = [piece for piece in half if not piece.job.future.done()]
            if alive and self.failure is not None:
                for piece in alive:
                    piece.job.fail(WorkerUnhealthy(self.failure))
            elif alive:
                got, lost = await self._run_isolating(alive)
                answered += got
                failed += lost
        return answered, failed

    def _deliver(
        self, piece: Piece, rows: np.ndarray, timing: Mapping[str, float], batch_size: int
    ) -> None:
        job = piece.job
        if job.future.done():
            return
        if job.outputs is None:
            job.outputs = np.empty((len(job.inputs), *rows.shape[1:]), dtype=rows.dtype)
        job.outputs[piece.start : piece.start + len(piece)] = rows
        for name in ("pack_ms", "compute_ms"):
            if name in timing:
                job.timing[name] = job.timing.get(name, 0.0) + float(timing[name])
        job.timing["batch_size"] = max(job.timing.get("batch_size", 0), batch_size)
        if "computed_tokens" in timing:
            job.real_tokens += int(timing["real_tokens"])
            job.computed_tokens += int(timing["computed_tokens"])
            job.timing["padding_efficiency"] = job.real_tokens / max(1, job.computed_tokens)
        job.pending_pieces -= 1
        if job.pending_pieces == 0:
            job.future.set_result(BatchResult(job.outputs, job.timing))
