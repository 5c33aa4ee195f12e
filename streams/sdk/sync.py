"""The SDK without an event loop: `SyncClient` (a client on a loop thread) and `infer_sync`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from streams.errors import KinferError
from streams.sdk.client import InferenceClient
from streams.sdk.mapping import DEFAULT_BATCH_SIZE, DEFAULT_MAX_IN_FLIGHT, Result
from streams.security import PLAINTEXT, KafkaSecurity
from streams.wire_encoding import DEFAULT_ENCODING, Encoding

T = TypeVar("T")


class SyncClient:
    """`InferenceClient` for code without an event loop: the same calls, blocking.

    ``with SyncClient(bootstrap, request_topic, reply_topic) as client:`` starts the client on
    an event loop in a background thread; `predict`, `infer` and `map` block the calling thread
    only, and may be called from several threads at once (they are pipelined as in the async
    client). Ctrl-C in a blocking call cancels that call.
    """

    def __init__(
        self,
        bootstrap: str,
        request_topic: str,
        reply_topic: str,
        *,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self._args = (bootstrap, request_topic, reply_topic)
        self._security = security
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: InferenceClient | None = None

    def __enter__(self) -> Self:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="kinfer-sdk", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread

        async def start() -> InferenceClient:
            client = InferenceClient(*self._args, security=self._security)
            return await client.__aenter__()

        try:
            self._client = self._run(start())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the client and its thread (also done on leaving the ``with`` block)."""
        if self._client is not None:
            client, self._client = self._client, None
            self._run(client.__aexit__(None, None, None))
        self._stop_loop()

    def predict(
        self,
        model: str,
        inputs: Sequence[Any],
        *,
        version: str | None = None,
        timeout_s: float = 30.0,
        deadline_ms: float | None = None,
        encoding: Encoding = DEFAULT_ENCODING,
        key: bytes | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """`InferenceClient.predict`, blocking: the outputs; raises ErrorAnswer, ReplyTimeout."""
        return self._run(
            self._started().predict(
                model,
                inputs,
                version=version,
                timeout_s=timeout_s,
                deadline_ms=deadline_ms,
                encoding=encoding,
                key=key,
                params=params,
            )
        )

    def infer(
        self,
        inputs: Sequence[Any],
        *,
        model: str = "minilm",
        timeout_s: float = 30.0,
        encoding: Encoding = DEFAULT_ENCODING,
        version: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`InferenceClient.infer`, blocking: the answer dict as it came."""
        return self._run(
            self._started().infer(
                inputs,
                model=model,
                timeout_s=timeout_s,
                encoding=encoding,
                version=version,
                params=params,
            )
        )

    def map(
        self,
        model: str,
        inputs: Iterable[Any],
        *,
        version: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        timeout_s: float = 60.0,
        deadline_ms: float | None = None,
        encoding: Encoding = DEFAULT_ENCODING,
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[Result]:
        """`InferenceClient.map`, as a blocking iterator of `Result`s in input order.

        ``inputs`` is read on the client's thread. Leaving the loop early (``break``) and
        closing the iterator cancels the messages in flight.
        """
        results = self._started().map(
            model,
            inputs,
            version=version,
            batch_size=batch_size,
            max_in_flight=max_in_flight,
            timeout_s=timeout_s,
            deadline_ms=deadline_ms,
            encoding=encoding,
            params=params,
        )
        try:
            while True:
                try:
                    yield self._run(_next(results))
                except StopAsyncIteration:
                    return
        finally:
            if self._loop is not None and self._loop.is_running():
                self._run(results.aclose())

    def _started(self) -> InferenceClient:
        if self._client is None:
            raise KinferError("the client is not started: use it as `with SyncClient(...)`")
        return self._client

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except (KeyboardInterrupt, concurrent.futures.CancelledError):
            future.cancel()
            raise

    def _stop_loop(self) -> None:
        if self._loop is None:
            return
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        loop.close()


async def _next(results: AsyncGenerator[Result, None]) -> Result:
    return await results.__anext__()


def infer_sync(
    bootstrap: str,
    request_topic: str,
    reply_topic: str,
    inputs: Sequence[Any],
    *,
    model: str = "minilm",
    timeout_s: float = 30.0,
    encoding: Encoding = DEFAULT_ENCODING,
    security: KafkaSecurity = PLAINTEXT,
    version: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One request/reply, blocking, for scripts and the CLI: the answer dict as it came."""

    async def run() -> dict[str, Any]:
        async with InferenceClient(
            bootstrap, request_topic, reply_topic, security=security
        ) as client:
            return await client.infer(
                inputs,
                model=model,
                timeout_s=timeout_s,
                encoding=encoding,
                version=version,
                params=params,
            )

    return asyncio.run(run())
