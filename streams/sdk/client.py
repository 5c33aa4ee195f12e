"""Request/reply over Kafka: `InferenceClient`, one producer and one reply reader, pipelined.

The client reads its answers from the reply topic without a consumer group: it takes every
partition, starts at the end, and matches answers to requests by ``id``. One reader task per
client hands each answer to the call waiting for its id, so any number of concurrent calls
share one client (and one reply topic); answers for ids this client did not send (another
client's, on a shared topic) are skipped.

Three levels:

- `InferenceClient.predict` sends one request and returns its outputs, one per input; an error
  answer raises its `streams.sdk.errors.ErrorAnswer` subclass, no answer in time raises
  `ReplyTimeout`;
- `InferenceClient.map` feeds an iterable (or async iterable) of inputs through, many inputs per
  message and a bounded number of messages in flight, yielding one `Result` per input in input
  order (``streams.sdk.mapping``);
- `InferenceClient.send` / `collect` / `infer` deal in raw answer dicts, in the encoding asked
  for (``encoding="base64"``: one base64 string per row; ``streams.wire_encoding.decode_rows``
  gives the rows of either kind as a float32 matrix).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams import contract
from streams.errors import KinferError
from streams.sdk.answers import outputs_of
from streams.sdk.errors import ReplyTimeout
from streams.sdk.mapping import DEFAULT_BATCH_SIZE, DEFAULT_MAX_IN_FLIGHT, Result, map_inputs
from streams.sdk.reading import start_reading
from streams.security import PLAINTEXT, KafkaSecurity, fail_fast
from streams.wire_encoding import DEFAULT_ENCODING, Encoding

log = logging.getLogger(__name__)

#: How long the reply reader's fetch may wait at the broker for an answer. aiokafka's default
#: (500 ms) is added in full to every answer's latency by some brokers (Tansu); the worker's
#: consumer uses KINFER_FETCH_MAX_WAIT_MS (20 ms) for the same reason.
REPLY_FETCH_MAX_WAIT_MS = 20


class InferenceClient:
    """Produces requests and collects their answers from one reply topic.

    Use it as ``async with InferenceClient(bootstrap, request_topic, reply_topic) as client``.
    ``security`` (``streams.security.kafka_security(settings)``) carries TLS and SASL. The
    worker follows ``reply-to`` only to its response topic or a topic matching its
    ``KINFER_REPLY_TO_PATTERN`` (default: ``kinfer.replies.<anything>``).
    """

    def __init__(
        self,
        bootstrap: str,
        request_topic: str,
        reply_topic: str,
        *,
        security: KafkaSecurity = PLAINTEXT,
        fetch_max_wait_ms: int = REPLY_FETCH_MAX_WAIT_MS,
    ) -> None:
        self.bootstrap = bootstrap
        self.request_topic = request_topic
        self.reply_topic = reply_topic
        self.security = security
        auth = security.aiokafka()
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **auth)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=fetch_max_wait_ms,
            max_partition_fetch_bytes=8 * 1_048_576,
            **auth,
        )
        #: request id -> the answer, for every id sent (or collected) and not yet collected
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._reader_error: BaseException | None = None

    async def __aenter__(self) -> Self:
        try:
            await fail_fast(self.security, self.bootstrap)  # a clear SecurityError, in seconds
            await self._producer.start()
            await start_reading(self._consumer, [self.reply_topic])
        except BaseException:  # stopped even if never started: nothing left open behind us
            await self._producer.stop()
            await self._consumer.stop()
            raise
        self._reader = asyncio.create_task(self._read_answers(), name="kinfer-client-replies")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        await self._consumer.stop()
        await self._producer.stop()

    async def _read_answers(self) -> None:
        """The one reader of the reply topic: each answer goes to the call waiting for it."""
        try:
            while True:
                batches = await self._consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        self._dispatch(record.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the consumer broke: every waiting call learns it
            log.warning("reading answers from %s failed: %r", self.reply_topic, exc)
            self._reader_error = exc
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(KinferError(f"reading answers failed: {exc!r}"))

    def _dispatch(self, value: bytes | None) -> None:
        try:
            answer = contract.decode_answer(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):  # not an answer (a tombstone, another writer's record)
            return
        request_id = answer.get("id")
        future = self._waiting.get(request_id) if isinstance(request_id, str) else None
        if future is not None and not future.done():
            future.set_result(answer)  # a later duplicate (redelivery) is skipped

    def _expect(self, request_id: str) -> asyncio.Future[dict[str, Any]]:
        """The future that gets ``request_id``'s answer (made before its request is sent)."""
        if self._reader is None:
            raise KinferError("the client is not started: use it as `async with`")
        if self._reader_error is not None:
            raise KinferError(f"reading answers failed: {self._reader_error!r}")
        future = self._waiting.get(request_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[request_id] = future
        return future

    async def send(
        self,
        inputs: Sequence[Any],
        *,
        request_id: str | None = None,
        model: str = "minilm",
        version: str | None = None,
        key: bytes | None = None,
        deadline_ms: float | None = None,
        encoding: Encoding = DEFAULT_ENCODING,
        params: Mapping[str, Any] | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> str:
        """Produce one request (acknowledged by the broker); returns its id.

        ``params`` are further request fields (e.g. ``{"top_k": 3}`` for a classifier);
        ``headers`` further Kafka headers (``x-`` ones are echoed on the answer).
        """
        request_id = request_id or uuid.uuid4().hex
        value = contract.encode_request(
            inputs,
            request_id=request_id,
            model=model,
            version=version,
            deadline_ms=deadline_ms,
            encoding=encoding,
            params=params,
        )
        all_headers = [
            (contract.REQUEST_ID_HEADER, request_id.encode()),
            (contract.REPLY_TO_HEADER, self.reply_topic.encode()),
            *headers,
        ]
        self._expect(request_id)  # before producing: the answer may come at once
        try:
            await self._producer.send_and_wait(
                self.request_topic, value, key=key, headers=all_headers
            )
        except BaseException:
            self._waiting.pop(request_id, None)
            raise
        return request_id

    async def collect(self, ids: Sequence[str], timeout_s: float) -> dict[str, dict[str, Any]]:
        """Wait for the answers to ``ids``; raises ReplyTimeout if some do not come.

        Safe to call concurrently (answers to other calls' ids are theirs). An answer is kept
        from the moment its request is sent by this client until it is collected; an id sent
        elsewhere is awaited from this call on.
        """
        futures = {request_id: self._expect(request_id) for request_id in dict.fromkeys(ids)}
        try:
            pending: set[asyncio.Future[dict[str, Any]]] = set()
            if futures:
                _, pending = await asyncio.wait(futures.values(), timeout=timeout_s)
            if pending:
                missing = [rid for rid, future in futures.items() if future in pending]
                raise ReplyTimeout(len(pending), timeout_s, missing)
            return {request_id: future.result() for request_id, future in futures.items()}
        finally:
            for request_id in futures:
                self._waiting.pop(request_id, None)

    async def infer(
        self,
        inputs: Sequence[Any],
        *,
        model: str = "minilm",
        timeout_s: float = 30.0,
        encoding: Encoding = DEFAULT_ENCODING,
        version: str | None = None,
        deadline_ms: float | None = None,
        key: bytes | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send one request and return its answer as it came: a result or an error record.

        `predict` is the same call returning the outputs and raising on an error answer.
        """
        request_id = await self.send(
            inputs,
            model=model,
            version=version,
            key=key,
            deadline_ms=deadline_ms,
            encoding=encoding,
            params=params,
        )
        return (await self.collect([request_id], timeout_s))[request_id]

    async def predict(
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
        """Run ``inputs`` through ``model`` as one request; returns one output per input.

        Raises:
            ErrorAnswer: the worker's error answer, as its code's subclass (UnknownModelError,
                InvalidRequestError, InputTooLargeError, DeadlineExceededError, ...).
            ReplyTimeout: no answer within ``timeout_s``.
        """
        answer = await self.infer(
            inputs,
            model=model,
            timeout_s=timeout_s,
            encoding=encoding,
            version=version,
            deadline_ms=deadline_ms,
            key=key,
            params=params,
        )
        return outputs_of(answer, len(inputs))

    def map(
        self,
        model: str,
        inputs: Iterable[Any] | AsyncIterable[Any],
        *,
        version: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        timeout_s: float = 60.0,
        deadline_ms: float | None = None,
        encoding: Encoding = DEFAULT_ENCODING,
        params: Mapping[str, Any] | None = None,
        linger_ms: float | None = None,
    ) -> AsyncGenerator[Result, None]:
        """Feed ``inputs`` through ``model``; yields one `Result` per input, in input order.

        ``inputs`` may be any iterable or async iterable, of unknown length: it is read as the
        answers come, ``batch_size`` inputs per request message and at most ``max_in_flight``
        messages unanswered. A per-input failure is a `Result` with ``error`` set (a message
        answered with an error is sent again input by input, so one bad input fails alone);
        UnknownModelError and ReplyTimeout (``timeout_s`` per message) end the iteration.
        ``linger_ms`` (async inputs only) sends a part-filled message once its first input has
        waited that long; by default a message waits until it is full or the inputs end.
        """
        return map_inputs(
            self,
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
