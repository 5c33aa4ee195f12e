"""Reliability on a real broker: crash safety under kill -9, the dead-letter topic, deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker, ExternalBroker
from streams.records import (
    DLQ_CODE_HEADER,
    DLQ_OFFSET_HEADER,
    DLQ_PARTITION_HEADER,
    DLQ_TOPIC_HEADER,
)
from tests.chaos.kill_worker import run_chaos
from tests.chaos.tools import TopicReader, by_key, produce_records, request_value
from tests.support.topics import create_worker_topics
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.broker]

#: one compiled shape: a worker is ready (and restarts) in a few seconds less
FAST_BUCKETS = {"KINFER_BATCH_BUCKETS": "32", "KINFER_SEQ_BUCKETS": "32"}
MAX_BYTES = 4096
MAX_INPUTS = 8


@pytest.mark.timeout(300)
async def test_kill_9_three_times_loses_nothing_and_duplicates_are_identical(
    broker: EmbeddedBroker | ExternalBroker,
) -> None:
    lines: list[str] = []
    result = await run_chaos(
        broker.bootstrap,
        requests=2000,
        kills=3,
        seed=4,
        timeout_s=240,
        settings=FAST_BUCKETS,
        progress=lines.append,
    )
    print("\n".join(lines))
    print(result.line(), f"max_output_diff={result.max_output_diff:.2e}")
    assert result.kills == 3, result.kill_log
    assert result.kills_while_processing == 3, result.kill_log
    assert result.sent == 2000
    assert result.lost == 0, result.line()
    assert result.errors == 0
    assert result.differing == 0, result.line()


@pytest.fixture(scope="module")
def topics(broker: EmbeddedBroker | ExternalBroker) -> dict[str, str]:
    return asyncio.run(create_worker_topics(broker.bootstrap, "r"))


@pytest.fixture(scope="module")
def worker(
    broker: EmbeddedBroker | ExternalBroker, topics: dict[str, str]
) -> Iterator[WorkerProcess]:
    settings = {
        **topics,
        **FAST_BUCKETS,
        "KINFER_MAX_MESSAGE_BYTES": str(MAX_BYTES),
        "KINFER_MAX_INPUTS_PER_REQUEST": str(MAX_INPUTS),
    }
    with WorkerProcess(broker.bootstrap, settings) as process:
        yield process


def header(record: Any, name: str) -> bytes | None:
    for key, value in record.headers:
        if key == name:
            return bytes(value)
    return None


@pytest.mark.timeout(120)
async def test_unservable_messages_go_unchanged_to_the_dlq_with_why_and_callers_get_errors(
    broker: Any, topics: dict[str, str], worker: WorkerProcess, unique_name: Any
) -> None:
    reply = "kinfer.replies." + unique_name("r")  # the default KINFER_REPLY_TO_PATTERN
    await ensure_topics(broker.bootstrap, {reply: 1})
    dlq = f"{topics['request_topic']}.dlq"
    cases: dict[bytes, tuple[bytes, str | None]] = {
        b"not-utf8": (b'{"id": "\xff\xfe", "inputs": ["\xc3\x28"]}', "INVALID_JSON"),
        b"not-json": (b'{"id": "nj", "model": "minilm", "inputs": [', "INVALID_JSON"),
        b"too-big": (request_value("big", ["x" * (MAX_BYTES + 10)]), "INPUT_TOO_LARGE"),
        b"too-many": (request_value("many", ["a"] * (MAX_INPUTS + 1)), "INPUT_TOO_LARGE"),
        b"array": (b"[1, 2, 3]", "INVALID_REQUEST"),
        b"inputs-str": (
            b'{"id": "s", "model": "minilm", "inputs": "one text"}',
            "INVALID_REQUEST",
        ),
        b"unknown-model": (
            orjson.dumps({"id": "um", "model": "gpt", "inputs": ["a"]}),
            "UNKNOWN_MODEL",
        ),
        b"good": (request_value("good", ["served after all that"]), None),
    }
    headers = [("reply-to", reply.encode()), ("x-request-id", b"trace-dlq")]
    async with TopicReader(broker.bootstrap, [reply, dlq]) as reader:
        acks = await produce_records(
            broker.bootstrap,
            topics["request_topic"],
            [(value, key, headers, None) for key, (value, _) in cases.items()],
        )
        bad = {key for key, (_, code) in cases.items() if code is not None}

        def done(records: list[Any]) -> bool:
            answered = {r.key for r in records if r.topic == reply}
            dead = {r.key for r in records if r.topic == dlq}
            return answered >= set(cases) and dead >= bad

        records = await reader.wait_for(done, timeout_s=60, what="answers and dead letters")
        await reader.poll(1.0)  # anything extra (a duplicate, a dead letter too many) shows
    answers = by_key([r for r in reader.records if r.topic == reply])
    dead = by_key([r for r in records if r.topic == dlq])
    assert set(dead) == bad, "only unservable messages are dead-lettered"
    for (key, (value, code)), ack in zip(cases.items(), acks, strict=True):
        [answer_record] = answers[key]
        answer = orjson.loads(answer_record.value)
        assert header(answer_record, "x-request-id") == b"trace-dlq"
        if code is None:
            assert len(answer["outputs"]) == 1, answer
            continue
        assert answer["error"]["code"] == code, (key, answer)
        [letter] = dead[key]
        assert letter.value == value, "the dead letter is the message unchanged"
        assert header(letter, DLQ_CODE_HEADER) == code.encode()
        assert header(letter, DLQ_TOPIC_HEADER) == topics["request_topic"].encode()
        assert header(letter, DLQ_PARTITION_HEADER) == str(ack.partition).encode()
        assert header(letter, DLQ_OFFSET_HEADER) == str(ack.offset).encode()
        assert header(letter, "reply-to") == reply.encode(), "original headers are kept"
    assert answers[b"too-big"][0].value
    assert orjson.loads(answers[b"too-big"][0].value)["id"] == "big"
    assert worker.proc is not None
    assert worker.proc.poll() is None


@pytest.mark.timeout(120)
async def test_expired_requests_are_answered_deadline_exceeded(
    broker: Any, topics: dict[str, str], worker: WorkerProcess, unique_name: Any
) -> None:
    reply = "kinfer.replies." + unique_name("r")  # the default KINFER_REPLY_TO_PATTERN
    await ensure_topics(broker.bootstrap, {reply: 1})
    headers = [("reply-to", reply.encode())]
    old = int(time.time() * 1000) - 60_000
    busy = [
        (request_value(f"busy-{i}", [f"keeps the worker busy {i}"]), b"busy", headers, None)
        for i in range(300)
    ]
    records = [
        # produced a minute ago (record timestamp) with a one-second budget
        (request_value("old", ["too late"], deadline_ms=1000), b"old", headers, old),
        # behind 300 requests on the same partition, with a 20 ms budget
        *busy,
        (request_value("hurried", ["queued behind"], deadline_ms=20), b"busy", headers, None),
        (request_value("patient", ["has time"], deadline_ms=600_000), b"busy", headers, None),
    ]
    async with TopicReader(broker.bootstrap, [reply]) as reader:
        await produce_records(broker.bootstrap, topics["request_topic"], records)
        wanted = {"old", "hurried", "patient"} | {f"busy-{i}" for i in range(300)}

        def done(got: list[Any]) -> bool:
            return {orjson.loads(r.value)["id"] for r in got} >= wanted

        await reader.wait_for(done, timeout_s=90, what="deadline answers")
    answers = {orjson.loads(r.value)["id"]: orjson.loads(r.value) for r in reader.records}
    assert answers["old"]["error"]["code"] == "DEADLINE_EXCEEDED"
    assert answers["hurried"]["error"]["code"] == "DEADLINE_EXCEEDED"
    assert len(answers["patient"]["outputs"]) == 1
    assert all("outputs" in answers[f"busy-{i}"] for i in range(300))
