"""A worker double for the SDK's ``map`` and the backfill engine in the fast tier (no Kafka).

`FakeWorker` has the ``infer`` and ``map`` of ``streams.sdk.InferenceClient``: each request's
answer comes after a random short delay (so answers come back out of order), its outputs
computed from the inputs (``[len(text), index in the message]``), and error answers the way the
worker gives them: ``UNKNOWN_MODEL`` for another model, ``INVALID_REQUEST`` for a message holding
an input starting with "bad", ``DEADLINE_EXCEEDED`` for one holding "late".
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping, Sequence
from typing import Any

from streams.sdk.errors import ReplyTimeout
from streams.sdk.mapping import Result, map_inputs


class FakeWorker:
    """Answers requests in memory; records every message and the most in flight at once."""

    def __init__(self, *, model: str = "minilm", seed: int = 0, fail_after: int | None = None):
        self.model = model
        self.messages: list[list[Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._random = random.Random(seed)
        #: after this many messages, every request times out (a worker gone)
        self.fail_after = fail_after

    async def infer(
        self,
        inputs: Sequence[Any],
        *,
        model: str = "minilm",
        timeout_s: float = 30.0,
        encoding: str = "float",
        version: str | None = None,
        deadline_ms: float | None = None,
        key: bytes | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.messages.append(list(inputs))
        if self.fail_after is not None and len(self.messages) > self.fail_after:
            raise ReplyTimeout(1, timeout_s)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self._random.uniform(0, 0.004))
        finally:
            self.in_flight -= 1
        texts = [str(item) for item in inputs]
        if model != self.model:
            return _error("UNKNOWN_MODEL", f"model {model} is not served here")
        if any(text.startswith("late") for text in texts):
            return _error("DEADLINE_EXCEEDED", "deadline passed 3 ms before the model could run it")
        bad = [i for i, text in enumerate(texts) if text.startswith("bad")]
        if bad:
            return _error("INVALID_REQUEST", f"inputs[{bad[0]}] is bad")
        return {
            "id": "x",
            "model": model,
            "version": "fake",
            "outputs": [[float(len(text)), float(i)] for i, text in enumerate(texts)],
        }

    def map(
        self,
        model: str,
        inputs: Iterable[Any] | AsyncIterable[Any],
        *,
        version: str | None = None,
        batch_size: int = 64,
        max_in_flight: int = 8,
        timeout_s: float = 60.0,
        deadline_ms: float | None = None,
        encoding: Any = "float",
        params: Mapping[str, Any] | None = None,
        linger_ms: float | None = None,
    ) -> AsyncGenerator[Result, None]:
        return map_inputs(
            self,  # type: ignore[arg-type]
            model,
            inputs,
            version=version,
            batch_size=batch_size,
            max_in_flight=max_in_flight,
            timeout_s=timeout_s,
            deadline_ms=deadline_ms,
            encoding=encoding,
            params=params,
            linger_ms=linger_ms,
        )


def _error(code: str, message: str) -> dict[str, Any]:
    return {"id": "x", "error": {"code": code, "message": message}}
