"""The request pipeline with a fake publisher: answers, dead letters, retries, ordering."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence

import numpy as np
import orjson
import pytest

from streams.batch_model import FunctionModel
from streams.batching import MicroBatcher
from streams.contract import Headers, Limits
from streams.pipeline import RequestPipeline
from streams.records import Inbound
from tests.support.models import text_table


async def fake_infer(texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
    return np.array([[float(len(t))] for t in texts], np.float32), {"compute_ms": 1.0}


class FakePublisher:
    """Records what reaches the broker; the first ``fail_times`` sends fail."""

    def __init__(self, fail_times: int = 0) -> None:
        self.fail_times = fail_times
        self.attempts = 0
        self.records: list[tuple[str, bytes | None, bytes, dict[str, bytes]]] = []

    async def publish(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers
    ) -> Awaitable[object]:
        self.attempts += 1
        if self.attempts <= self.fail_times:
            raise ConnectionError("broker unreachable")
        self.records.append((topic, key, value, dict(headers)))
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def inbound(
    value: bytes | None, offset: int = 0, headers: Headers = (), partition: int = 0
) -> Inbound:
    return Inbound("requests", partition, offset, b"key", value, headers, timestamp=0.0)


@pytest.fixture
async def batcher() -> MicroBatcher:
    batcher = MicroBatcher(FunctionModel(fake_infer), max_batch=8, max_wait_s=0.001)
    batcher.start()
    yield batcher  # type: ignore[misc]
    await batcher.stop()


def make_pipeline(batcher: MicroBatcher, publisher: FakePublisher) -> RequestPipeline:
    return RequestPipeline(
        models=text_table(batcher),
        publisher=publisher,
        default_topic="responses",
        dead_letter_topic="requests.dlq",
        limits=Limits(max_message_bytes=1000, max_inputs=4, max_input_chars=100),
        retry_backoff_s=(0.001, 0.01),
    )


GOOD = orjson.dumps({"id": "g1", "model": "minilm", "inputs": ["abc", "de"]})


async def test_good_request_is_answered_with_key_and_echoed_headers(batcher: MicroBatcher) -> None:
    publisher = FakePublisher()
    pipeline = make_pipeline(batcher, publisher)
    headers = (("x-request-id", b"rid"), ("reply-to", b"mine"), ("other", b"no"))
    await pipeline.handle(pipeline.prepare(inbound(GOOD, headers=headers)))
    [(topic, key, value, sent_headers)] = publisher.records
    assert (topic, key) == ("mine", b"key")
    assert sent_headers["x-request-id"] == b"rid"
    assert "other" not in sent_headers
    answer = orjson.loads(value)
    assert answer["id"] == "g1"
    assert answer["version"] == "v1"
    assert answer["outputs"] == [[3.0], [2.0]]


@pytest.mark.parametrize(
    ("value", "code", "dead_letter"),
    [
        (b"\xff not json", "INVALID_JSON", True),
        (b'{"id": "x", "model": "minilm", "inputs": 5}', "INVALID_REQUEST", True),
        (b'{"id": "x", "model": "bert", "inputs": ["a"]}', "UNKNOWN_MODEL", True),
        (
            b'{"id": "x", "model": "minilm", "version": "v0", "inputs": ["a"]}',
            "UNKNOWN_MODEL",
            True,
        ),
        (
            b'{"id": "x", "model": "minilm", "inputs": ["a","a","a","a","a"]}',
            "INPUT_TOO_LARGE",
            True,
        ),
        (
            b'{"id": "x", "model": "minilm", "inputs": ["a"], "deadline_ms": 1}',
            "DEADLINE_EXCEEDED",
            False,
        ),
    ],
)
async def test_errors_answer_and_dead_letter(
    batcher: MicroBatcher, value: bytes, code: str, dead_letter: bool
) -> None:
    publisher = FakePublisher()
    pipeline = make_pipeline(batcher, publisher)
    await pipeline.handle(pipeline.prepare(inbound(value, offset=42, headers=(("x-a", b"1"),))))
    answer = orjson.loads(publisher.records[0][2])
    assert publisher.records[0][0] == "responses"
    assert answer["error"]["code"] == code
    assert answer["id"] == (None if code == "INVALID_JSON" else "x")
    dlq = [r for r in publisher.records if r[0] == "requests.dlq"]
    assert len(dlq) == int(dead_letter)
    if dead_letter:
        _, key, raw, headers = dlq[0]
        assert raw == value
        assert key == b"key"
        assert headers["kinfer-error-code"] == code.encode()
        assert headers["kinfer-source-topic"] == b"requests"
        assert headers["kinfer-source-partition"] == b"0"
        assert headers["kinfer-source-offset"] == b"42"
        assert headers["x-a"] == b"1"


async def test_publish_failures_are_retried_and_handle_returns_only_after_success(
    batcher: MicroBatcher,
) -> None:
    publisher = FakePublisher(fail_times=3)
    pipeline = make_pipeline(batcher, publisher)
    await pipeline.handle(pipeline.prepare(inbound(GOOD)))
    assert publisher.attempts == 4
    assert len(publisher.records) == 1


async def test_handle_never_returns_while_publishing_fails(batcher: MicroBatcher) -> None:
    """The agent acks only after handle() returns: a failing publish is never acked."""
    publisher = FakePublisher(fail_times=10**9)
    pipeline = make_pipeline(batcher, publisher)
    task = asyncio.ensure_future(pipeline.handle(pipeline.prepare(inbound(GOOD))))
    await asyncio.sleep(0.3)
    assert not task.done()
    assert publisher.attempts > 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_answers_keep_the_order_of_their_partition(batcher: MicroBatcher) -> None:
    publisher = FakePublisher()
    pipeline = make_pipeline(batcher, publisher)
    values = [
        orjson.dumps({"id": f"r{i}", "model": "minilm", "inputs": ["a"] * (1 + i % 4)})
        if i % 3
        else b"bad json"
        for i in range(30)
    ]
    prepared = [pipeline.prepare(inbound(v, offset=i)) for i, v in enumerate(values)]
    await asyncio.gather(*(pipeline.handle(p) for p in reversed(prepared)))
    answers = [orjson.loads(r[2]) for r in publisher.records if r[0] == "responses"]
    ids = [a["id"] for a in answers]
    assert ids == [None if i % 3 == 0 else f"r{i}" for i in range(30)]


async def test_answer_too_large_for_the_producer_becomes_an_error(batcher: MicroBatcher) -> None:
    publisher = FakePublisher()
    pipeline = RequestPipeline(
        models=text_table(batcher),
        publisher=publisher,
        default_topic="responses",
        dead_letter_topic="requests.dlq",
        limits=Limits(),
        max_answer_bytes=60,
    )
    await pipeline.handle(pipeline.prepare(inbound(GOOD)))
    answer = orjson.loads(publisher.records[0][2])
    assert answer["error"]["code"] == "INPUT_TOO_LARGE"
    assert "KINFER_MAX_ANSWER_BYTES" in answer["error"]["message"]
    assert [r[0] for r in publisher.records] == ["responses", "requests.dlq"]
