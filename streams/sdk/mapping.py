"""`map_inputs`: many inputs through the model, packed per message, bounded, in input order.

The inputs are read lazily, ``batch_size`` per request message; a new message is sent only while
fewer than ``max_in_flight`` are unanswered, so a generator of any length (a 10 GB file) is read
no faster than the worker answers. Results are yielded in input order: the oldest message's
results first, as soon as it is answered.

Errors are per input. A message answered with an error (one input too long, one input the model
failed on, the answer too large) is sent again input by input, concurrently, so each input gets
its own result and one bad input never fails its neighbours. Two errors end the whole map
instead, because no input can succeed: ``UNKNOWN_MODEL`` (`UnknownModelError`) and no answer in
time (`ReplyTimeout`). ``DEADLINE_EXCEEDED`` is every input's error, without a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Iterable,
    Mapping,
)
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from streams.sdk.answers import outputs_of
from streams.sdk.errors import (
    DeadlineExceededError,
    ErrorAnswer,
    UnknownModelError,
    error_from_answer,
)
from streams.wire_encoding import Encoding

if TYPE_CHECKING:
    from streams.sdk.client import InferenceClient

#: Inputs per request message: large enough that per-message costs (JSON, Kafka, the reply
#: round trip) are small against the model's, small enough for an answer of 384-float rows to
#: stay well under Kafka's 1 MiB (64 rows: 300 KB as floats, 131 KB as base64).
DEFAULT_BATCH_SIZE: Final = 64
#: Request messages unanswered at once (8 x 64 inputs: a few seconds of CPU model work).
DEFAULT_MAX_IN_FLIGHT: Final = 8


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one input of `map`: its ``output``, or the ``error`` answered for it."""

    #: position of the input in the iterable, from 0
    index: int
    input: Any
    output: Any = None
    error: ErrorAnswer | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> Any:
        """The output; raises the error for a failed input."""
        if self.error is not None:
            raise self.error
        return self.output


@dataclass(frozen=True, slots=True)
class _Call:
    """How each request of one map is sent."""

    client: InferenceClient
    model: str
    version: str | None
    timeout_s: float
    deadline_ms: float | None
    encoding: Encoding
    params: Mapping[str, Any] | None

    async def results(self, start: int, chunk: list[Any]) -> list[Result]:
        """The results of ``chunk`` (inputs ``start``...), split input by input on an error."""
        answer = await self.client.infer(
            chunk,
            model=self.model,
            version=self.version,
            timeout_s=self.timeout_s,
            deadline_ms=self.deadline_ms,
            encoding=self.encoding,
            params=self.params,
        )
        error = error_from_answer(answer)
        if error is None:
            outputs = outputs_of(answer, len(chunk))
            return [
                Result(start + i, item, output)
                for i, (item, output) in enumerate(zip(chunk, outputs, strict=True))
            ]
        if isinstance(error, UnknownModelError):
            raise error
        if len(chunk) == 1 or isinstance(error, DeadlineExceededError):
            return [Result(start + i, item, error=error) for i, item in enumerate(chunk)]
        singles = await _all_or_none(
            [self.results(start + i, [item]) for i, item in enumerate(chunk)]
        )
        return [result for part in singles for result in part]


async def map_inputs(
    client: InferenceClient,
    model: str,
    inputs: Iterable[Any] | AsyncIterable[Any],
    *,
    version: str | None,
    batch_size: int,
    max_in_flight: int,
    timeout_s: float,
    deadline_ms: float | None,
    encoding: Encoding,
    params: Mapping[str, Any] | None,
    linger_ms: float | None,
) -> AsyncGenerator[Result, None]:
    """`InferenceClient.map`'s engine (see the module docstring); close it to stop early.

    Messages are counted in flight until their results are yielded; the inputs of a message
    answered with an error, sent again one by one, count as that one message.

    Closing the iterator (``contextlib.aclosing``, or breaking out of ``async for`` in a task
    that then ends) cancels the messages still in flight; their answers are then ignored.
    """
    if batch_size < 1 or max_in_flight < 1:
        raise ValueError(
            f"batch_size and max_in_flight must be >= 1: {batch_size}, {max_in_flight}"
        )
    call = _Call(client, model, version, timeout_s, deadline_ms, encoding, params)
    pending: deque[asyncio.Task[list[Result]]] = deque()
    chunks = _chunks(inputs, batch_size, linger_ms)
    reading: asyncio.Task[list[Any]] | None = None  # the next chunk, while there is room
    exhausted = False
    start = 0
    try:
        while True:
            if reading is None and not exhausted and len(pending) < max_in_flight:
                reading = asyncio.ensure_future(anext(chunks))
            waiting: set[asyncio.Future[Any]] = {reading} if reading is not None else set()
            if pending:
                waiting.add(pending[0])
            if not waiting:
                return
            # a new chunk to send, or the oldest message answered: whichever comes first
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if reading is not None and reading.done():
                try:
                    chunk = reading.result()
                except StopAsyncIteration:
                    exhausted = True
                else:
                    pending.append(asyncio.create_task(call.results(start, chunk)))
                    start += len(chunk)
                reading = None
            while pending and pending[0].done():
                for result in pending.popleft().result():
                    yield result
    finally:
        await _cancel([*pending, *([reading] if reading is not None else [])])
        await chunks.aclose()


async def _chunks(
    inputs: Iterable[Any] | AsyncIterable[Any], size: int, linger_ms: float | None
) -> AsyncGenerator[list[Any], None]:
    """``inputs`` in lists of ``size`` (the last may be shorter)."""
    if not isinstance(inputs, AsyncIterable):
        iterator = iter(inputs)
        while chunk := list(itertools.islice(iterator, size)):
            yield chunk
        return
    if linger_ms is None:
        chunk = []
        async for item in inputs:
            chunk.append(item)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    async for chunk in _lingering_chunks(inputs.__aiter__(), size, linger_ms / 1000.0):
        yield chunk


async def _lingering_chunks(
    inputs: AsyncIterator[Any], size: int, linger_s: float
) -> AsyncGenerator[list[Any], None]:
    """Chunks of ``size``, or fewer once the first input of a chunk has waited ``linger_s``."""
    loop = asyncio.get_running_loop()
    chunk: list[Any] = []
    first_at = 0.0
    following: asyncio.Future[Any] | None = None
    try:
        while True:
            if following is None:
                following = asyncio.ensure_future(inputs.__anext__())
            wait = None if not chunk else max(0.0, first_at + linger_s - loop.time())
            done, _ = await asyncio.wait({following}, timeout=wait)
            if not done:  # lingered long enough: send what there is
                yield chunk
                chunk = []
                continue
            arrived, following = following, None
            try:
                item = arrived.result()
            except StopAsyncIteration:
                break
            if not chunk:
                first_at = loop.time()
            chunk.append(item)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    finally:
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following


async def _all_or_none(calls: list[Awaitable[list[Result]]]) -> list[list[Result]]:
    """Await every call concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        await _cancel(tasks)  # cancels those still running; retrieves every outcome


async def _cancel(tasks: Iterable[asyncio.Future[Any]]) -> None:
    waiting = list(tasks)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
