"""Request/reply over Kafka: send requests, wait for their answers (async and sync).

The client reads its answers from the reply topic without a consumer group: it takes every
partition, starts at the end, and matches answers to requests by ``id``. One reader task per
client hands each answer to the call waiting for its id, so any number of concurrent
``infer()``/``collect()`` calls share one client (and one reply topic); answers for ids this
client did not send (another client's, on a shared topic) are skipped.

Answers come back parsed, as dicts, in the encoding asked for (``encoding="base64"``: one base64
string per row); ``streams.wire_encoding.decode_rows(answer)`` gives the rows of either kind as a
float32 matrix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams import contract
from streams.errors import KinferError
from streams.security import PLAINTEXT, KafkaSecurity, fail_fast
from streams.wire_encoding import DEFAULT_ENCODING, Encoding

log = logging.getLogger(__name__)


class ReplyTimeout(KinferError, TimeoutError):
    """No answer arrived in time."""

    def __init__(self, missing: int, timeout_s: float) -> None:
        super().__init__(f"{missing} answer(s) did not arrive within {timeout_s:.1f}s")


async def start_reading(
    consumer: AIOKafkaConsumer,
    topics: Sequence[str],
    *,
    from_beginning: bool = False,
    timeout_s: float = 15.0,
) -> list[TopicPartition]:
    """Start a group-less ``consumer`` on every partition of ``topics``, at the end (or beginning).

    Waits for the topics' metadata (raises KinferError after ``timeout_s``) and resolves the
    positions before returning, so nothing produced afterwards can be missed. On any failure the
    consumer is stopped again: left started, it would leak its connections and tasks.
    """
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        assigned: list[TopicPartition] = []
        for topic in topics:
            while not (found := consumer.partitions_for_topic(topic)):
                if time.monotonic() > deadline:
                    raise KinferError(f"topic {topic!r} does not exist or has no partitions")
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
            assigned += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(assigned)
        if from_beginning:
            await consumer.seek_to_beginning(*assigned)
        else:
            await consumer.seek_to_end(*assigned)
        for partition in assigned:
            await consumer.position(partition)
    except BaseException:
        await consumer.stop()
        raise
    return assigned


class InferenceClient:
    """Produces requests and collects their answers from one reply topic.

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
    ) -> None:
        self.bootstrap = bootstrap
        self.request_topic = request_topic
        self.reply_topic = reply_topic
        self.security = security
        auth = security.aiokafka()
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **auth)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **auth
        )
        #: request id -> the answer, for every id sent (or collected) and not yet collected
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._reader_error: BaseException | None = None

    async def __aenter__(self) -> Self:
        await fail_fast(self.security, self.bootstrap)  # a clear SecurityError, in seconds
        await self._producer.start()
        try:
            await start_reading(self._consumer, [self.reply_topic])
        except BaseException:
            await self._producer.stop()
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
        inputs: Sequence[str],
        *,
        request_id: str | None = None,
        model: str = "minilm",
        key: bytes | None = None,
        deadline_ms: float | None = None,
        encoding: Encoding = DEFAULT_ENCODING,
    ) -> str:
        """Produce one request (acknowledged by the broker); returns its id."""
        request_id = request_id or uuid.uuid4().hex
        value = contract.encode_request(
            inputs,
            request_id=request_id,
            model=model,
            deadline_ms=deadline_ms,
            encoding=encoding,
        )
        headers = [
            (contract.REQUEST_ID_HEADER, request_id.encode()),
            (contract.REPLY_TO_HEADER, self.reply_topic.encode()),
        ]
        self._expect(request_id)  # before producing: the answer may come at once
        try:
            await self._producer.send_and_wait(self.request_topic, value, key=key, headers=headers)
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
                raise ReplyTimeout(len(pending), timeout_s)
            return {request_id: future.result() for request_id, future in futures.items()}
        finally:
            for request_id in futures:
                self._waiting.pop(request_id, None)

    async def infer(
        self,
        inputs: Sequence[str],
        *,
        model: str = "minilm",
        timeout_s: float = 30.0,
        encoding: Encoding = DEFAULT_ENCODING,
    ) -> dict[str, Any]:
        """Send one request and return its answer (a result or an error record)."""
        request_id = await self.send(inputs, model=model, encoding=encoding)
        return (await self.collect([request_id], timeout_s))[request_id]


def infer_sync(
    bootstrap: str,
    request_topic: str,
    reply_topic: str,
    inputs: Sequence[str],
    *,
    model: str = "minilm",
    timeout_s: float = 30.0,
    encoding: Encoding = DEFAULT_ENCODING,
    security: KafkaSecurity = PLAINTEXT,
) -> dict[str, Any]:
    """Blocking request/reply, for scripts and the CLI."""

    async def run() -> dict[str, Any]:
        async with InferenceClient(
            bootstrap, request_topic, reply_topic, security=security
        ) as client:
            return await client.infer(inputs, model=model, timeout_s=timeout_s, encoding=encoding)

    return asyncio.run(run())
