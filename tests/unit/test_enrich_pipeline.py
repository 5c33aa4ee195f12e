"""One route's pipeline with a fake publisher: enriched records, dead letters, order, retries."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError, NotLeaderForPartitionError

from streams.batch_model import FunctionModel
from streams.batching import MicroBatcher
from streams.contract import Headers, Limits
from streams.enrich.agents import _until_served
from streams.enrich.pipeline import EnrichPipeline
from streams.enrich.route import EnrichRoute
from streams.errors import WorkerUnhealthy
from streams.model_io import ClassificationOutputs, ImageInputs
from streams.model_table import ModelTable, ServedVersion, VersionStatus
from streams.records import Inbound
from tests.support.models import served_text, text_table

pytestmark = pytest.mark.timeout(30)

ROUTE = EnrichRoute(
    source="orders", sink="orders.enriched", model="minilm", text="$.note", id="$.order_id"
)
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def fake_embed(texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
    """Rows that tell the texts apart: [length, first character's code]."""
    rows = [[float(len(t)), float(ord(t[0]) if t else 0)] for t in texts]
    return np.array(rows, np.float32), {"compute_ms": 1.0}


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int | None
    timestamp: float | None


class FakePublisher:
    """Records what reaches the broker; ``fail`` may raise for a record (once per call)."""

    def __init__(self, fail: Any = None) -> None:
        self.fail = fail
        self.attempts: list[str] = []
        self.sent: list[Sent] = []

    async def publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers,
        *,
        partition: int | None = None,
        timestamp: float | None = None,
    ) -> Awaitable[object]:
        self.attempts.append(topic)
        error = self.fail(topic, value) if self.fail is not None else None
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if error is not None:
            done.set_exception(error)
        else:
            self.sent.append(Sent(topic, key, value, dict(headers), partition, timestamp))
            done.set_result(None)
        return done

    def on(self, topic: str) -> list[Sent]:
        return [record for record in self.sent if record.topic == topic]


def event(
    value: bytes | None, offset: int = 0, partition: int = 0, headers: Headers = ()
) -> Inbound:
    return Inbound("orders", partition, offset, b"key-%d" % offset, value, headers, 1700000000.123)


def order(order_id: str, note: Any) -> bytes:
    return orjson.dumps({"order_id": order_id, "note": note, "total": 12.5})


@pytest.fixture
async def batcher() -> AsyncIterator[MicroBatcher]:
    batcher = MicroBatcher(FunctionModel(fake_embed), max_batch=8, max_wait_s=0.001)
    batcher.start()
    yield batcher
    await batcher.stop()


def make(
    models: ModelTable,
    publisher: FakePublisher,
    route: EnrichRoute = ROUTE,
    *,
    sink_partitions: int = 4,
    max_record_bytes: int = 10_000,
) -> EnrichPipeline:
    return EnrichPipeline(
        route=route,
        models=models,
        publisher=publisher,
        sink_partitions=sink_partitions,
        limits=Limits(max_message_bytes=2000, max_inputs=4, max_input_chars=100),
        max_record_bytes=max_record_bytes,
        retry_backoff_s=(0.001, 0.01),
    )


async def handle_all(pipeline: EnrichPipeline, *events: Inbound) -> None:
    prepared = [pipeline.prepare(inbound) for inbound in events]  # in consumption order
    await asyncio.gather(*(pipeline.handle(p) for p in prepared))


async def test_an_event_is_written_to_its_partition_with_key_headers_and_prediction(
    batcher: MicroBatcher,
) -> None:
    publisher = FakePublisher()
    pipeline = make(text_table(batcher), publisher, sink_partitions=2)
    source = order("A17", "left at the door")
    headers = (("traceparent", TRACEPARENT), ("tracestate", b"rojo=1"), ("x-tenant", b"t1"))
    await handle_all(pipeline, event(source, offset=9, partition=3, headers=headers))
    [sent] = publisher.sent
    assert (sent.topic, sent.key, sent.partition) == ("orders.enriched", b"key-9", 1)
    assert sent.value == source[:-1] + b',"embedding":[16.0,108.0]}'
    assert sent.timestamp is not None
    assert int(sent.timestamp * 1000) == 1700000000123, "Faust truncates: the same millisecond"
    assert sent.headers == {
        "traceparent": TRACEPARENT,
        "tracestate": b"rojo=1",
        "x-tenant": b"t1",
        "kinfer-model": b"minilm",
        "kinfer-version": b"v1",
        "kinfer-source-topic": b"orders",
        "kinfer-source-partition": b"3",
        "kinfer-source-offset": b"9",
        "kinfer-id": b"A17",
    }
    assert (pipeline.enriched, pipeline.dead_lettered) == (1, 0)


@pytest.mark.parametrize(
    ("value", "code", "reason"),
    [
        (b"not json", "INVALID_JSON", "not valid UTF-8 JSON"),
        (b"[1]", "INVALID_REQUEST", "only a JSON object can be enriched"),
        (b'{"order_id": "A1"}', "INVALID_REQUEST", "the text path $.note matches nothing"),
        (order("A1", 42), "INVALID_REQUEST", "$.note holds a number; the model 'minilm' takes"),
        (order("A1", "x" * 101), "INPUT_TOO_LARGE", "the text at $.note length in characters"),
        (b'{"note": "x"}', "INVALID_REQUEST", "the id path $.order_id matches nothing"),
    ],
)
async def test_an_event_that_cannot_be_enriched_is_dead_lettered_with_the_reason(
    batcher: MicroBatcher, value: bytes, code: str, reason: str
) -> None:
    publisher = FakePublisher()
    pipeline = make(text_table(batcher), publisher)
    source_headers = (("traceparent", TRACEPARENT),)
    await handle_all(pipeline, event(value, offset=5, partition=1, headers=source_headers))
    assert publisher.on("orders.enriched") == []
    [letter] = publisher.on("orders.enriched.dlq")
    assert (letter.value, letter.key, letter.partition) == (value, b"key-5", None)
    assert letter.headers["kinfer-error-code"] == code.encode()
    assert reason in letter.headers["kinfer-error-message"].decode()
    assert letter.headers["kinfer-source-topic"] == b"orders"
    assert letter.headers["kinfer-source-partition"] == b"1"
    assert letter.headers["kinfer-source-offset"] == b"5"
    assert letter.headers["kinfer-model"] == b"minilm"
    assert letter.headers["traceparent"] == TRACEPARENT
    assert letter.headers.get("kinfer-id") == (b"A1" if b"A1" in value else None)
    assert (pipeline.enriched, pipeline.dead_lettered) == (0, 1)


async def test_an_unknown_model_or_version_dead_letters_the_event(batcher: MicroBatcher) -> None:
    publisher = FakePublisher()
    pinned = EnrichRoute(**{**ROUTE.model_dump(), "version": "v9"})
    pipeline = make(text_table(batcher), publisher, pinned)
    await handle_all(pipeline, event(order("A1", "hello")))
    [letter] = publisher.on("orders.enriched.dlq")
    assert letter.headers["kinfer-error-code"] == b"UNKNOWN_MODEL"
    assert b"v9" in letter.headers["kinfer-error-message"]


async def test_a_partition_keeps_its_order_and_dead_letters_take_their_turn(
    batcher: MicroBatcher,
) -> None:
    publisher = FakePublisher()
    pipeline = make(text_table(batcher), publisher)
    events = [
        event(order(f"A{i}", "n" * (i + 1)) if i != 2 else b"bad", offset=i, partition=i % 2)
        for i in range(8)
    ]
    await handle_all(pipeline, *events)
    for partition in (0, 1):
        offsets = [
            int(s.headers["kinfer-source-offset"])
            for s in publisher.sent
            if s.headers["kinfer-source-partition"] == str(partition).encode()
        ]
        assert offsets == sorted(offsets) == list(range(partition, 8, 2))
    assert publisher.on("orders.enriched.dlq")[0].value == b"bad"


async def test_a_retried_record_is_delivered_before_the_next_of_its_partition(
    batcher: MicroBatcher,
) -> None:
    failures = iter([NotLeaderForPartitionError(), ConnectionError("down")])

    def fail(topic: str, value: bytes) -> Exception | None:
        return next(failures, None) if b'"A0"' in value else None

    publisher = FakePublisher(fail)
    pipeline = make(text_table(batcher), publisher)
    await handle_all(pipeline, *(event(order(f"A{i}", "hi"), offset=i) for i in range(3)))
    assert [s.headers["kinfer-id"] for s in publisher.sent] == [b"A0", b"A1", b"A2"]
    assert publisher.attempts.count("orders.enriched") == 5  # A0 three times


async def test_an_enriched_record_too_large_is_dead_lettered_whole() -> None:
    async def wide(texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
        return np.full((len(texts), 300), 0.123456, np.float32), {"compute_ms": 1.0}

    batcher = MicroBatcher(FunctionModel(wide), max_batch=8, max_wait_s=0.001)
    batcher.start()
    try:
        publisher = FakePublisher()
        pipeline = make(text_table(batcher), publisher, max_record_bytes=2000)
        value = orjson.dumps({"order_id": "A1", "note": "hello", "pad": "p" * 200})
        await handle_all(pipeline, event(value, headers=(("x-big", b"h" * 300),)))
    finally:
        await batcher.stop()
    [letter] = publisher.on("orders.enriched.dlq")
    assert letter.value == value, "the event fits: it is dead-lettered whole"
    assert letter.headers["kinfer-error-code"] == b"INPUT_TOO_LARGE"
    message = letter.headers["kinfer-error-message"]
    assert b"the enriched event's record size in bytes" in message
    assert b"KINFER_MAX_ANSWER_BYTES" in message
    assert letter.headers["kinfer-id"] == b"A1"


async def test_a_sink_that_refuses_a_record_for_size_gets_its_dead_letter(
    batcher: MicroBatcher,
) -> None:
    def fail(topic: str, value: bytes) -> Exception | None:
        return MessageSizeTooLargeError() if topic == "orders.enriched" else None

    publisher = FakePublisher(fail)
    pipeline = make(text_table(batcher), publisher)
    await handle_all(pipeline, event(order("A1", "hello"), offset=3))
    [letter] = publisher.on("orders.enriched.dlq")
    assert letter.headers["kinfer-error-code"] == b"INPUT_TOO_LARGE"
    assert (pipeline.enriched, pipeline.dead_lettered) == (0, 1)
    assert publisher.attempts == ["orders.enriched", "orders.enriched.dlq"], "never retried"


async def test_a_dead_letter_topic_that_refuses_for_good_makes_the_worker_unhealthy(
    batcher: MicroBatcher,
) -> None:
    from aiokafka.errors import TopicAuthorizationFailedError

    def fail(topic: str, value: bytes) -> Exception | None:
        return TopicAuthorizationFailedError() if topic.endswith(".dlq") else None

    pipeline = make(text_table(batcher), FakePublisher(fail))
    prepared = [pipeline.prepare(event(b"bad", offset=0)), pipeline.prepare(event(b"{}", 1))]
    results = await asyncio.gather(*(pipeline.handle(p) for p in prepared), return_exceptions=True)
    assert all(isinstance(r, WorkerUnhealthy) for r in results), results
    assert pipeline.failure is not None
    assert "orders.enriched.dlq" in pipeline.failure


async def test_abandoned_events_pass_their_turn_and_release_the_model(
    batcher: MicroBatcher,
) -> None:
    publisher = FakePublisher()
    table = text_table(batcher)
    pipeline = make(table, publisher)
    first = pipeline.prepare(event(order("A0", "a"), offset=0))
    second = pipeline.prepare(event(order("A1", "b"), offset=1))
    [served] = list(table)
    assert served.active == 2
    pipeline.abandon(first)
    await pipeline.handle(second)
    assert [s.headers["kinfer-id"] for s in publisher.sent] == [b"A1"]
    assert served.active == 0


async def test_events_and_requests_share_the_models_batches(batcher: MicroBatcher) -> None:
    from streams.pipeline import RequestPipeline

    publisher = FakePublisher()
    table = text_table(batcher)
    pipeline = make(table, publisher)
    requests = RequestPipeline(
        models=table,
        publisher=publisher,
        default_topic="responses",
        dead_letter_topic="requests.dlq",
        limits=Limits(),
    )
    request = orjson.dumps({"id": "r1", "model": "minilm", "inputs": ["abc"]})
    prepared = [pipeline.prepare(event(order(f"A{i}", "xy"), offset=i)) for i in range(3)]
    asked = requests.prepare(Inbound("requests", 0, 0, None, request, (), 0.0))
    await asyncio.gather(*(pipeline.handle(p) for p in prepared), requests.handle(asked))
    [answer] = publisher.on("responses")
    assert orjson.loads(answer.value)["timing"]["batch_size"] == 4, "one batch of all four"


async def test_a_classifier_writes_label_and_probabilities() -> None:
    async def classify(images: Any) -> tuple[np.ndarray, Mapping[str, float]]:
        rows = np.zeros((len(images), 10), np.float32)
        rows[:, 3] = 1.0
        return rows, {"compute_ms": 1.0}

    batcher = MicroBatcher(FunctionModel(classify), max_batch=8, max_wait_s=0.001)
    batcher.start()
    try:
        table = ModelTable()
        table.add(
            ServedVersion(
                name="digits",
                version="1",
                inputs=ImageInputs(),
                outputs=ClassificationOutputs(10),
                batcher=batcher,
                status=VersionStatus("digits", "1", state="ready"),
            )
        )
        route = EnrichRoute(source="scans", sink="scans.labelled", model="digits", text="$.px")
        publisher = FakePublisher()
        pipeline = make(table, publisher, route)  # its output field: "prediction"
        image = [[0] * 8 for _ in range(8)]
        await handle_all(
            pipeline,
            event(orjson.dumps({"px": image}), offset=0),
            event(orjson.dumps({"px": [[0] * 7]}), offset=1),
        )
        [labelled] = publisher.on("scans.labelled")
        assert orjson.loads(labelled.value)["prediction"]["label"] == 3
        [letter] = publisher.on("scans.labelled.dlq")
        assert letter.headers["kinfer-error-code"] == b"INVALID_REQUEST"
    finally:
        await batcher.stop()


async def test_a_route_may_name_its_output_field(batcher: MicroBatcher) -> None:
    publisher = FakePublisher()
    named = EnrichRoute(**{**ROUTE.model_dump(), "output_field": "vec", "encoding": "base64"})
    pipeline = make(text_table(batcher), publisher, named)
    await handle_all(pipeline, event(order("A1", "hi"), offset=0))
    [sent] = publisher.sent
    doc = orjson.loads(sent.value)
    assert "embedding" not in doc
    assert np.frombuffer(base64.b64decode(doc["vec"]), "<f4").tolist() == [2.0, 104.0]


async def test_a_route_waits_for_its_pinned_version_and_fails_the_worker_if_it_failed(
    batcher: MicroBatcher,
) -> None:
    failures: list[str] = []
    table = ModelTable()
    app = SimpleNamespace(models=table, fail=failures.append)
    pinned = EnrichRoute(**{**ROUTE.model_dump(), "version": "v1"})
    waiting = asyncio.ensure_future(_until_served(app, pinned))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    assert not waiting.done(), "v1 is not served yet: the route waits"
    table.add(served_text(batcher))
    await asyncio.wait_for(waiting, 5)
    assert failures == []

    broken = EnrichRoute(**{**ROUTE.model_dump(), "version": "v2"})
    table.set_status(VersionStatus("minilm", "v2", state="failed", reason="bad weights"))
    await asyncio.wait_for(_until_served(app, broken), 5)  # type: ignore[arg-type]
    assert len(failures) == 1
    assert "minilm v2: bad weights" in failures[0]
