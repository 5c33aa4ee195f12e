"""The seams for the worker's metrics: answers (from the pipeline) and batches (from a batcher).

The pipeline tells an `AnswerObserver` about every request once its answer was acknowledged by
the broker; a version's batcher calls its `BatchObserver` after every batch the model computed.
Both default to doing nothing; `streams.metrics.WorkerMetrics` implements them. Neither ever
sees a request's inputs, id or headers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

__all__ = ["NO_OBSERVER", "OK", "AnswerObserver", "BatchObserver", "NoObserver"]

#: the ``code`` of a request answered with a result (errors have their error code)
OK = "OK"

#: ``(inputs in the batch, the model's timing: compute_ms, real_tokens, computed_tokens...)``
BatchObserver = Callable[[int, Mapping[str, float]], None]


class AnswerObserver(Protocol):
    """Told about every answered request."""

    def answered(
        self,
        *,
        model: str,
        version: str,
        code: str,
        inputs: int,
        kafka_timestamp: float,
        queue_ms: float | None,
        dead_letter_code: str | None,
    ) -> None:
        """``code``: ``OK`` or the error code; ``model``/``version`` empty when not routed;
        ``kafka_timestamp``: the request record's timestamp, epoch seconds (0 if unknown)."""
        ...


class NoObserver:
    """The default: observes nothing."""

    def answered(
        self,
        *,
        model: str,
        version: str,
        code: str,
        inputs: int,
        kafka_timestamp: float,
        queue_ms: float | None,
        dead_letter_code: str | None,
    ) -> None:
        return None


NO_OBSERVER = NoObserver()
