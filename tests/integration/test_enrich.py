"""Enrichment routes against the real broker and one real worker.

One module-scoped worker serves its request topic and two routes declared in
``KINFER_ENRICH_ROUTES``, both reading one source: ``<source> -> <source>.enriched`` (minilm,
text ``$.note``, id ``$.order_id``) and ``<source> -> <source>.vectors`` (the same, as base64
under ``vec``). Every test produces events of its own (ids unique to the test) and finds them on
a sink by their ``kinfer-id`` header. The clients are aiokafka, confluent-kafka (librdkafka) and
kcat through ``kinfer kcat``, as integrations use. (``kinfer enrich`` runs the same worker with
one route: its own checks are in tests/unit/test_enrich_route.py, its refusal of a missing
source below.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker, ExternalBroker
from streams.kcat import LibrdkafkaNotFoundError, find_kcat, kcat_env
from tests.support.answers import AnswerReader
from tests.support.topics import committed_total, create_worker_topics
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

Broker = EmbeddedBroker | ExternalBroker
Record: TypeAlias = ConsumerRecord[bytes, bytes]
Event: TypeAlias = tuple[int, bytes, bytes, list[tuple[str, bytes]]]
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
PARTITIONS = 2


@pytest.fixture(scope="module")
def route(broker: Broker) -> dict[str, str]:
    """The worker's topics and group, and the route's source (created), sink and DLQ."""
    names = asyncio.run(create_worker_topics(broker.bootstrap, "en", partitions=PARTITIONS))
    source = f"en-orders-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(broker.bootstrap, {source: PARTITIONS}))
    return {
        **names,
        "source": source,
        "sink": f"{source}.enriched",
        "dlq": f"{source}.enriched.dlq",
        "vectors": f"{source}.vectors",
    }


@pytest.fixture(scope="module")
def worker(broker: Broker, route: dict[str, str]) -> Iterator[WorkerProcess]:
    settings = {name: route[name] for name in ("request_topic", "response_topic", "app_id")}
    # short texts only: two compiled shapes keep the warm-up short
    settings.update({"BATCH_BUCKETS": "1,8", "SEQ_BUCKETS": "32"})
    routes = [
        {"source": route["source"], "sink": route["sink"], "model": "minilm", "text": "$.note"},
        {"source": route["source"], "sink": route["vectors"], "model": "minilm", "text": "note"},
    ]
    routes[0]["id"] = routes[1]["id"] = "$.order_id"
    routes[1].update(output_field="vec", encoding="base64")
    settings["ENRICH_ROUTES"] = json.dumps(routes)
    with WorkerProcess(broker.bootstrap, settings) as process:
        yield process


def order(order_id: str, note: Any, **more: Any) -> bytes:
    return orjson.dumps({"order_id": order_id, "note": note, **more})


async def produce(
    bootstrap: str, topic: str, events: Sequence[Event]
) -> list[tuple[int, int, int]]:
    """(partition, key, value, headers) each -> (partition, offset, timestamp ms) each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = []
        for partition, key, value, headers in events:
            meta = await producer.send_and_wait(
                topic, value, key=key, headers=headers, partition=partition
            )
            sent.append((meta.partition, meta.offset, meta.timestamp))
        return sent
    finally:
        await producer.stop()


async def read_by_id(
    bootstrap: str, topic: str, ids: set[str], timeout_s: float = 30.0
) -> dict[str, Record]:
    """The records of ``topic`` (read from the beginning) whose kinfer-id is in ``ids``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: dict[str, Record] = {}
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while not ids <= found.keys():
            assert time.monotonic() < deadline, f"missing on {topic}: {sorted(ids - found.keys())}"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event_id = dict(record.headers).get("kinfer-id", b"").decode()
                    if event_id in ids:
                        found[event_id] = record
    finally:
        await consumer.stop()
    return found


async def read_dead_letters(
    bootstrap: str, topic: str, keys: set[bytes], timeout_s: float = 30.0
) -> dict[bytes, Record]:
    """The dead letters whose key is in ``keys`` (the DLQ has one partition)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: dict[bytes, Record] = {}
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while not keys <= found.keys():
            assert time.monotonic() < deadline, f"dead letters missing: {keys - found.keys()}"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.update({r.key: r for r in records if r.key in keys})
    finally:
        await consumer.stop()
    return found


async def test_events_are_enriched_in_order_and_the_bad_ones_dead_lettered(
    broker: Broker, route: dict[str, str], worker: WorkerProcess
) -> None:
    tag = uuid.uuid4().hex[:6]
    trace = [("traceparent", TRACEPARENT), ("tracestate", TRACESTATE), ("x-tenant", b"t1")]
    good = [
        (
            i % PARTITIONS,
            f"k{i}".encode(),
            order(f"{tag}-{i}", f"parcel {i} left at the door", total=1.50),
            trace,
        )
        for i in range(8)
    ]
    bad = [
        (0, b"bad-json", b"{not json", trace),
        (1, b"bad-path", orjson.dumps({"order_id": f"{tag}-np", "notes": "typo"}), trace),
        (1, b"bad-type", order(f"{tag}-nt", 17), []),
    ]
    sent = await produce(broker.bootstrap, route["source"], [*good[:4], *bad, *good[4:]])
    placed = dict(zip([e[1] for e in [*good[:4], *bad, *good[4:]]], sent, strict=True))

    enriched = await read_by_id(broker.bootstrap, route["sink"], {f"{tag}-{i}" for i in range(8)})
    for i, (partition, key, value, _) in enumerate(good):
        record = enriched[f"{tag}-{i}"]
        source_partition, source_offset, source_ms = placed[key]
        assert (record.partition, record.key) == (partition, key), "same partition, same key"
        assert record.timestamp == source_ms, "the source timestamp"
        assert record.value.startswith(value[:-1] + b',"embedding":['), "original bytes untouched"
        doc = orjson.loads(record.value)
        assert doc["note"] == f"parcel {i} left at the door"
        assert len(doc["embedding"]) == 384
        assert np.linalg.norm(doc["embedding"]) == pytest.approx(1.0, abs=1e-4)
        assert list(record.headers) == [
            *trace,
            ("kinfer-model", b"minilm"),
            ("kinfer-version", b"0.1.0"),
            ("kinfer-source-topic", route["source"].encode()),
            ("kinfer-source-partition", str(source_partition).encode()),
            ("kinfer-source-offset", str(source_offset).encode()),
            ("kinfer-id", f"{tag}-{i}".encode()),
        ]
    for partition in range(PARTITIONS):
        ours = sorted(
            (r for r in enriched.values() if r.partition == partition), key=lambda r: r.offset
        )
        source_offsets = [int(dict(r.headers)["kinfer-source-offset"]) for r in ours]
        assert source_offsets == sorted(source_offsets), "each partition keeps its order"

    letters = await read_dead_letters(
        broker.bootstrap, route["dlq"], {b"bad-json", b"bad-path", b"bad-type"}
    )
    reasons = {
        key: (dict(r.headers)["kinfer-error-code"], dict(r.headers)["kinfer-error-message"])
        for key, r in letters.items()
    }
    assert reasons[b"bad-json"][0] == b"INVALID_JSON"
    assert reasons[b"bad-path"] == (
        b"INVALID_REQUEST",
        b"the text path $.note matches nothing: $ has no key 'note'",
    )
    assert reasons[b"bad-type"][0] == b"INVALID_REQUEST"
    assert b"holds a number" in reasons[b"bad-type"][1]
    assert letters[b"bad-json"].value == b"{not json", "the event, unchanged"
    headers = dict(letters[b"bad-path"].headers)
    assert headers["traceparent"] == TRACEPARENT
    assert headers["kinfer-id"] == f"{tag}-np".encode()
    assert headers["kinfer-source-offset"] == str(placed[b"bad-path"][1]).encode()

    # every event, dead-lettered ones included, is committed once its record is acknowledged
    ends = {p: max(off for part, off, _ in sent if part == p) + 1 for p in range(PARTITIONS)}
    total = await committed_total(
        broker.bootstrap,
        route["app_id"],
        route["source"],
        PARTITIONS,
        expected=sum(ends.values()),
        timeout_s=20,
    )
    assert total >= sum(ends.values())


async def test_embeddings_equal_a_direct_requests_on_both_routes_and_the_answer_keeps_the_trace(
    broker: Broker, route: dict[str, str], worker: WorkerProcess
) -> None:
    tag = uuid.uuid4().hex[:6]
    notes = ["the parcel was left at the door", "refund the second item", "ça marche 👍"]
    events: list[Event] = [
        (i % 2, b"d%d" % i, order(f"{tag}-{i}", note), []) for i, note in enumerate(notes)
    ]
    request = orjson.dumps({"id": f"direct-{tag}", "model": "minilm", "inputs": notes})
    trace = [("traceparent", TRACEPARENT), ("tracestate", TRACESTATE), ("x-request-id", b"r1")]
    async with AnswerReader(broker.bootstrap, route["response_topic"]) as reader:
        await produce(broker.bootstrap, route["source"], events)
        await produce(broker.bootstrap, route["request_topic"], [(0, b"req", request, trace)])
        answers = await reader.collect({f"direct-{tag}"}, timeout_s=30)
        answer_headers = dict(reader.records[f"direct-{tag}"].headers)
    enriched = await read_by_id(broker.bootstrap, route["sink"], {f"{tag}-{i}" for i in range(3)})
    rows = np.array(answers[f"direct-{tag}"]["outputs"], np.float32)
    embedded = np.array(
        [orjson.loads(enriched[f"{tag}-{i}"].value)["embedding"] for i in range(3)], np.float32
    )
    np.testing.assert_allclose(embedded, rows, atol=1e-5)
    # the second route on the same source: the same embeddings, as base64 under "vec"
    vectors = await read_by_id(broker.bootstrap, route["vectors"], {f"{tag}-{i}" for i in range(3)})
    for i, note in enumerate(notes):
        doc = orjson.loads(vectors[f"{tag}-{i}"].value)
        assert (doc["note"], "embedding" in doc) == (note, False)
        row = np.frombuffer(base64.b64decode(doc["vec"]), "<f4")
        np.testing.assert_allclose(row, rows[i], atol=1e-5)
    assert answer_headers["traceparent"] == TRACEPARENT
    assert answer_headers["tracestate"] == TRACESTATE
    assert answer_headers["x-request-id"] == b"r1"


def test_a_confluent_kafka_producer_and_consumer_group_see_enriched_events(
    broker: Broker, route: dict[str, str], worker: WorkerProcess
) -> None:
    from confluent_kafka import Consumer, Producer

    tag = uuid.uuid4().hex[:6]
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(4):
        producer.produce(
            route["source"],
            key=f"ck{i}".encode(),
            value=order(f"{tag}-{i}", f"confluent note {i}", lines=[{"sku": "X1"}]),
            headers=[("traceparent", TRACEPARENT), ("app", b"integration")],
        )
    assert producer.flush(15) == 0, "the source events were delivered"

    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"integration-{tag}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([route["sink"]])
    seen: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 40
        while len(seen) < 4:
            assert time.monotonic() < deadline, f"only {sorted(seen)} arrived"
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            raw: Any = message.headers() or []
            headers = {str(name): bytes(value or b"") for name, value in raw}
            event_id = headers.get("kinfer-id", b"").decode()
            if event_id.startswith(f"{tag}-"):
                seen[event_id] = (message.key(), headers, orjson.loads(message.value() or b""))
    finally:
        consumer.close()
    for i in range(4):
        key, headers, doc = seen[f"{tag}-{i}"]
        assert key == f"ck{i}".encode()
        assert headers["traceparent"] == TRACEPARENT
        assert headers["app"] == b"integration"
        assert headers["kinfer-model"] == b"minilm"
        assert doc["lines"] == [{"sku": "X1"}]
        assert doc["note"] == f"confluent note {i}"
        assert len(doc["embedding"]) == 384


def kinfer_kcat(bootstrap: str, args: Sequence[str], stdin: bytes | None = None) -> str:
    """``kinfer kcat -- ARGS`` in a subprocess; its stdout."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "kcat",
            "--broker",
            f"kafka://{bootstrap}",
            "--",
            *args,
        ],
        input=stdin,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode()


def test_kcat_produces_an_event_and_reads_it_enriched_and_an_answer_with_headers(
    broker: Broker,
    route: dict[str, str],
    worker: WorkerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if find_kcat() is None:
        pytest.skip("kcat is not installed (apt-get install kcat)")
    try:
        kcat_env(tmp_path_factory.mktemp("kcat"))
    except LibrdkafkaNotFoundError as exc:
        pytest.skip(str(exc))
    tag = uuid.uuid4().hex[:6]
    event = order(f"{tag}-0", "scanned with kcat")
    trace = ["-H", f"traceparent={TRACEPARENT.decode()}"]
    kinfer_kcat(
        broker.bootstrap, ["-P", "-t", route["source"], "-p", "1", "-k", f"kc-{tag}", *trace], event
    )
    request = orjson.dumps({"id": f"kcat-{tag}", "model": "minilm", "inputs": ["kcat asks"]})
    kinfer_kcat(
        broker.bootstrap, ["-P", "-t", route["request_topic"], "-k", f"kr-{tag}", *trace], request
    )

    [record] = asyncio.run(read_by_id(broker.bootstrap, route["sink"], {f"{tag}-0"})).values()
    read = ["-C", "-t", route["sink"], "-p", "1", "-o", str(record.offset), "-c", "1", "-e", "-J"]
    message = json.loads(kinfer_kcat(broker.bootstrap, read))
    assert message["key"] == f"kc-{tag}"
    headers = dict(zip(message["headers"][::2], message["headers"][1::2], strict=True))
    assert headers["traceparent"] == TRACEPARENT.decode()
    assert headers["kinfer-id"] == f"{tag}-0"
    assert headers["kinfer-source-partition"] == "1"
    doc = json.loads(message["payload"])
    assert doc["note"] == "scanned with kcat"
    assert len(doc["embedding"]) == 384

    deadline = time.monotonic() + 30
    answer: dict[str, Any] | None = None
    while answer is None:
        assert time.monotonic() < deadline, "no answer to the kcat request"
        answers = ["-C", "-t", route["response_topic"], "-o", "beginning", "-e", "-J", "-q"]
        for line in kinfer_kcat(broker.bootstrap, answers).splitlines():
            found = json.loads(line)
            if found["key"] == f"kr-{tag}":
                answer = found
        time.sleep(0.5)
    headers = dict(zip(answer["headers"][::2], answer["headers"][1::2], strict=True))
    assert headers["traceparent"] == TRACEPARENT.decode()
    assert json.loads(answer["payload"])["id"] == f"kcat-{tag}"


def test_a_missing_source_is_a_clear_error_before_any_warm_up(broker: Broker) -> None:
    missing = f"en-missing-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    done = subprocess.run(
        [
            *(
                sys.executable,
                "-m",
                "streams.cli",
                "enrich",
                "--broker",
                f"kafka://{broker.bootstrap}",
            ),
            *("--source", missing, "--sink", f"{missing}.enriched", "--model", "minilm"),
            *("--text", "$.note"),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    error = done.stderr.decode()
    assert done.returncode == 1, error
    assert f"source topic(s) {missing} not found" in error
    assert "never creates it" in error
    assert "Traceback" not in error
    assert time.monotonic() - started < 30, "refused before loading any model"
