"""The batcher's bookkeeping: a request (`_Job`) and the slices of it that batches hold."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.batch_model import Prepared

__all__ = ["BatchResult", "Job", "Piece", "describe"]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """A request's outputs (one row per input) and where its time went."""

    outputs: np.ndarray
    timing: dict[str, float]


@dataclass(eq=False)
class Job:
    inputs: Sequence[Any]
    deadline: float | None
    enqueued_at: float
    future: asyncio.Future[BatchResult]
    outputs: np.ndarray | None = None
    pending_pieces: int = 0
    timing: dict[str, float] = field(default_factory=dict)
    real_tokens: int = 0
    computed_tokens: int = 0

    def fail(self, error: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass(eq=False, slots=True)
class Piece:
    job: Job
    start: int
    prepared: Prepared

    def __len__(self) -> int:
        return len(self.prepared)

    def split(self, at: int) -> tuple[Piece, Piece]:
        """The first ``at`` inputs and the rest (the job then waits for one more piece)."""
        self.job.pending_pieces += 1
        size = len(self.prepared)
        return (
            Piece(self.job, self.start, self.prepared.slice(0, at)),
            Piece(self.job, self.start + at, self.prepared.slice(at, size)),
        )


def describe(result: BatchResult) -> dict[str, Any]:
    """Timing of a result, rounded for the wire."""
    return {name: round(value, 3) for name, value in result.timing.items()}
