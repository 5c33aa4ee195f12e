"""Publishing under Kafka's real failures, with a broker double: what is retried, what is
answered instead, per-partition order across a failed delivery, and the worker giving up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from faust.exceptions import ProducerSendError

from streams.batch_model import FunctionModel
from streams.batching import MicroBatcher
from streams.contract import Headers, Limits
from streams.errors import WorkerUnhealthy
from streams.pipeline import RequestPipeline
from streams.publisher import FaustPublisher, TopicNotFound, is_permanent, record_bytes
from streams.records import DLQ_CODE_HEADER, DLQ_VALUE_DROPPED_HEADER, Inbound
from tests.support.models import text_table

pytestmark = pytest.mark.timeout(30)

#: what decides a record's fate: its topic and value -> an error, or None to deliver it
Rule = Callable[[str, bytes], BaseException | None]


def never(topic: str, value: bytes) -> BaseException | None:
    return None


class BrokerDouble:
    """A publisher whose records reach ``delivered`` only when their delivery succeeds.

    ``on_send`` may refuse a record at once (as the producer does); ``on_delivery`` may fail
    its delivery a little later (as the broker's answer does), while later sends go through.
    """

    def __init__(self, on_send: Rule = never, on_delivery: Rule = never) -> None:
        self.on_send = on_send
        self.on_delivery = on_delivery
        self.attempts: list[tuple[str, bytes]] = []
        self.delivered: list[tuple[str, bytes, dict[str, bytes]]] = []

    async def publish(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers
    ) -> Awaitable[object]:
        self.attempts.append((topic, value))
        refused = self.on_send(topic, value)
        if refused is not None:
            raise refused
        failure = self.on_delivery(topic, value)
        return asyncio.ensure_future(self._deliver(topic, value, dict(headers), failure))

    async def _deliver(
        self, topic: str, value: bytes, headers: dict[str, bytes], failure: BaseException | None
    ) -> None:
        await asyncio.sleep(0.01 if failure is not None else 0)
        if failure is not None:
            raise failure
        self.delivered.append((topic, value, headers))

    def answers(self, topic: str = "responses") -> list[dict[str, Any]]:
        return [orjson.loads(value) for t, value, _ in self.delivered if t == topic]


def faust_wrapped(exc: Exception) -> ProducerSendError:
    """What Faust's producer raises: its own error, from aiokafka's."""
    try:
        raise ProducerSendError(f"Error while sending: {exc!r}") from exc
    except ProducerSendError as wrapped:
        return wrapped


def times(count: int, error: Callable[[], BaseException], when: Rule | None = None) -> Rule:
    """A rule that fails the first ``count`` matching records with ``error()``."""
    left = [count]

    def rule(topic: str, value: bytes) -> BaseException | None:
        if left[0] > 0 and (when is None or when(topic, value) is not None):
            left[0] -= 1
            return error()
        return None

    return rule


def to(topic_wanted: str) -> Rule:
    return lambda topic, value: KeyError() if topic == topic_wanted else None


def holding(text: bytes) -> Rule:
    return lambda topic, value: KeyError() if text in value else None


async def fake_infer(texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
    return np.array([[float(len(t))] for t in texts], np.float32), {"compute_ms": 1.0}


@pytest.fixture
async def batcher() -> Any:
    batcher = MicroBatcher(FunctionModel(fake_infer), max_batch=64, max_wait_s=0.001)
    batcher.start()
    yield batcher
    await batcher.stop()


def make(batcher: MicroBatcher, broker: BrokerDouble, **overrides: Any) -> RequestPipeline:
    options: dict[str, Any] = {
        "models": text_table(batcher),
        "publisher": broker,
        "default_topic": "responses",
        "dead_letter_topic": "requests.dlq",
        "limits": Limits(),
        "retry_backoff_s": (0.001, 0.01),
    }
    options.update(overrides)
    return RequestPipeline(**options)


def request(rid: str, inputs: Sequence[str] = ("abc",)) -> bytes:
    return orjson.dumps({"id": rid, "model": "minilm", "inputs": list(inputs)})


def inbound(value: bytes, offset: int = 0, headers: Headers = (), partition: int = 0) -> Inbound:
    return Inbound("requests", partition, offset, b"key", value, headers, timestamp=0.0)


async def handle_all(pipeline: RequestPipeline, *messages: Inbound) -> None:
    prepared = [pipeline.prepare(message) for message in messages]
    await asyncio.wait_for(asyncio.gather(*(pipeline.handle(p) for p in prepared)), 10)


# --- item 2: order across a failed delivery ------------------------------------------------


async def test_a_failed_delivery_is_retried_before_the_next_answer_of_its_partition(
    batcher: MicroBatcher,
) -> None:
    # r0's first delivery fails (a retriable error, answered by the broker after r1 was sent)
    broker = BrokerDouble(
        on_delivery=times(1, lambda: NotLeaderForPartitionError(), when=holding(b'"r0"'))
    )
    pipeline = make(batcher, broker)
    await handle_all(pipeline, *(inbound(request(f"r{i}"), offset=i) for i in range(4)))
    assert [a["id"] for a in broker.answers()] == ["r0", "r1", "r2", "r3"]
    assert sum(b'"r0"' in value for _, value in broker.attempts) == 2  # retried, once


async def test_order_holds_when_a_send_is_refused_for_size_and_answered_instead(
    batcher: MicroBatcher,
) -> None:
    broker = BrokerDouble(
        on_delivery=times(1, lambda: MessageSizeTooLargeError(), when=holding(b'"big"'))
    )
    pipeline = make(batcher, broker)
    await handle_all(
        pipeline,
        inbound(request("a"), offset=0),
        inbound(request("big"), offset=1),
        inbound(request("c"), offset=2),
    )
    answers = broker.answers()
    assert [a["id"] for a in answers] == ["a", "big", "c"]
    assert answers[1]["error"]["code"] == "INPUT_TOO_LARGE"


# --- item 1: permanent refusals are answered, retriable ones retried ------------------------


async def test_a_result_the_producer_refuses_for_size_becomes_an_error_and_a_dead_letter(
    batcher: MicroBatcher,
) -> None:
    refuse = times(
        1, lambda: faust_wrapped(MessageSizeTooLargeError("too big")), when=to("responses")
    )
    broker = BrokerDouble(on_send=refuse)
    pipeline = make(batcher, broker)
    await handle_all(pipeline, inbound(request("r1"), offset=7))
    [answer] = broker.answers()
    assert answer["error"]["code"] == "INPUT_TOO_LARGE"
    assert "KINFER_MAX_ANSWER_BYTES" in answer["error"]["message"]
    [(_, raw, headers)] = [d for d in broker.delivered if d[0] == "requests.dlq"]
    assert raw == request("r1")
    assert headers[DLQ_CODE_HEADER] == b"INPUT_TOO_LARGE"
    assert len(broker.attempts) == 3  # the result once (never again), the error, the letter
    assert (pipeline.answered, pipeline.errors, pipeline.dead_lettered) == (0, 1, 1)


@pytest.mark.parametrize(
    ("where", "error"),
    [
        ("send", lambda: TopicNotFound("kinfer.replies.gone", 10.0)),
        ("send", lambda: faust_wrapped(TopicAuthorizationFailedError())),
        ("delivery", lambda: TopicAuthorizationFailedError()),
    ],
    ids=["missing-topic", "not-authorised-on-send", "not-authorised-on-delivery"],
)
async def test_a_reply_to_topic_that_refuses_for_good_gets_the_error_on_the_response_topic(
    batcher: MicroBatcher, where: str, error: Callable[[], BaseException]
) -> None:
    rule = times(10**6, error, when=to("kinfer.replies.gone"))
    broker = BrokerDouble(**({"on_send": rule} if where == "send" else {"on_delivery": rule}))
    pipeline = make(batcher, broker)
    headers = (("reply-to", b"kinfer.replies.gone"), ("x-request-id", b"rid-1"))
    await handle_all(pipeline, inbound(request("r1"), headers=headers))
    [answer] = broker.answers("responses")
    assert answer["id"] == "r1"
    assert answer["error"]["code"] == "INVALID_REQUEST"
    assert "kinfer.replies.gone" in answer["error"]["message"]
    [(_, raw, dlq_headers)] = [d for d in broker.delivered if d[0] == "requests.dlq"]
    assert raw == request("r1")
    assert dlq_headers[DLQ_CODE_HEADER] == b"INVALID_REQUEST"
    assert sum(topic == "kinfer.replies.gone" for topic, _ in broker.attempts) == 1


async def test_retriable_errors_are_retried_until_delivered(batcher: MicroBatcher) -> None:
    flaky = [
        lambda: faust_wrapped(KafkaConnectionError("down")),
        lambda: KafkaTimeoutError(),
        lambda: ConnectionError("refused"),
    ]
    errors = iter(flaky)
    broker = BrokerDouble(on_send=lambda topic, value: next(errors, lambda: None)())
    pipeline = make(batcher, broker)
    await handle_all(pipeline, inbound(request("r1")))
    assert len(broker.attempts) == 4
    [answer] = broker.answers()
    assert answer["outputs"] == [[3.0]]


async def test_a_missing_response_topic_of_our_own_is_waited_for_not_given_up(
    batcher: MicroBatcher,
) -> None:
    # after a broker restart the topic watch re-creates it: keep trying
    broker = BrokerDouble(
        on_send=times(3, lambda: TopicNotFound("responses", 10.0), when=to("responses"))
    )
    pipeline = make(batcher, broker)
    await handle_all(pipeline, inbound(request("r1")))
    assert broker.answers()[0]["outputs"] == [[3.0]]
    assert pipeline.failure is None


async def test_when_our_own_topic_refuses_for_good_the_worker_stops_answering(
    batcher: MicroBatcher,
) -> None:
    broker = BrokerDouble(
        on_send=lambda topic, value: (
            TopicAuthorizationFailedError() if topic == "responses" else None
        )
    )
    pipeline = make(batcher, broker)
    first = pipeline.prepare(inbound(b"not json", offset=0))
    second = pipeline.prepare(inbound(request("r1"), offset=1))
    results = await asyncio.wait_for(
        asyncio.gather(pipeline.handle(first), pipeline.handle(second), return_exceptions=True),
        10,
    )
    assert all(isinstance(result, WorkerUnhealthy) for result in results)
    assert pipeline.failure is not None
    assert "TopicAuthorizationFailedError" in pipeline.failure
    # the partition's later message published nothing either (no answer out of order)
    assert not [topic for topic, _ in broker.attempts if topic == "responses"][1:]


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (MessageSizeTooLargeError(), True),
        (faust_wrapped(MessageSizeTooLargeError()), True),
        (RecordListTooLargeError(), True),
        (TopicAuthorizationFailedError(), True),
        (TopicNotFound("t", 1.0), True),
        (UnknownTopicOrPartitionError(), False),  # aiokafka: retriable (metadata may lag)
        (NotLeaderForPartitionError(), False),
        (KafkaConnectionError(), False),
        (faust_wrapped(KafkaTimeoutError()), False),
        (ConnectionError(), False),
        (TimeoutError(), False),
    ],
)
def test_permanent_and_retriable_produce_errors(error: BaseException, permanent: bool) -> None:
    assert is_permanent(error) is permanent


# --- sizes --------------------------------------------------------------------------------


async def test_an_answer_over_the_limit_is_answered_too_large_before_it_is_sent(
    batcher: MicroBatcher,
) -> None:
    broker = BrokerDouble()
    pipeline = make(batcher, broker, max_answer_bytes=2000)
    await handle_all(
        pipeline,
        inbound(request("big", ["x"] * 500), offset=0),
        inbound(request("small"), offset=1),
    )
    big, small = broker.answers()
    assert big["error"]["code"] == "INPUT_TOO_LARGE"
    assert small["outputs"] == [[3.0]]
    assert all(record_bytes(b"key", v, list(h.items())) <= 2000 for _, v, h in broker.delivered)


async def test_a_dead_letter_too_large_to_copy_keeps_its_headers_and_drops_its_value(
    batcher: MicroBatcher,
) -> None:
    broker = BrokerDouble()
    pipeline = make(batcher, broker, max_answer_bytes=2000, limits=Limits(max_inputs=4))
    value = request("many", ["y" * 100] * 50)  # INPUT_TOO_LARGE, and a 5 KB request
    await handle_all(pipeline, inbound(value, headers=(("x-trace", b"t1"),)))
    [(_, raw, headers)] = [d for d in broker.delivered if d[0] == "requests.dlq"]
    assert raw == b""
    assert headers[DLQ_VALUE_DROPPED_HEADER] == str(len(value)).encode()
    assert headers["x-trace"] == b"t1"


# --- answers carry total_ms; internal errors carry a reference ------------------------------


async def test_a_result_reports_total_ms(batcher: MicroBatcher) -> None:
    broker = BrokerDouble()
    await handle_all(make(batcher, broker), inbound(request("r1")))
    timing = broker.answers()[0]["timing"]
    assert isinstance(timing["total_ms"], float)
    assert timing["total_ms"] >= 0


async def test_an_unexpected_failure_is_answered_with_a_reference_not_its_repr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Exploding(MicroBatcher):
        async def submit(self, inputs: Sequence[Any], deadline: float | None = None) -> Any:
            raise KeyError("internal detail")

    broker = BrokerDouble()
    pipeline = make(Exploding(FunctionModel(fake_infer), max_batch=1, max_wait_s=0), broker)
    with caplog.at_level(logging.ERROR, logger="streams.pipeline"):
        await handle_all(pipeline, inbound(request("r1")))
    error = broker.answers()[0]["error"]
    assert error["code"] == "INTERNAL"
    assert "internal detail" not in error["message"]
    assert "KeyError" not in error["message"]
    reference = error["message"].split("error reference ")[1].split(";")[0]
    [logged] = [r for r in caplog.records if reference in r.getMessage()]
    assert logged.exc_info is not None
    assert "internal detail" in repr(logged.exc_info[1])


async def test_unhealthy_batcher_leaves_the_request_unanswered() -> None:
    class Broken(MicroBatcher):
        async def submit(self, inputs: Sequence[Any], deadline: float | None = None) -> Any:
            raise WorkerUnhealthy("device lost")

    broker = BrokerDouble()
    pipeline = make(Broken(FunctionModel(fake_infer), max_batch=1, max_wait_s=0), broker)
    prepared = pipeline.prepare(inbound(request("r1")))
    with pytest.raises(WorkerUnhealthy):
        await pipeline.handle(prepared)
    assert broker.attempts == []


# --- the producer's metadata wait is bounded ----------------------------------------------


class _Cluster:
    def __init__(self, known: set[str]) -> None:
        self.known = known

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0} if topic in self.known else None


class _FaustProducer:
    """Faust's producer as FaustPublisher sees it: send() waits on metadata for a new topic."""

    def __init__(self, known: set[str]) -> None:
        self._producer = type("AIOKafkaProducer", (), {"client": type("C", (), {})()})()
        self._producer.client.cluster = _Cluster(known)
        self.known = known

    async def send(self, topic: str, *args: Any) -> Awaitable[object]:
        if topic not in self.known:
            await asyncio.sleep(3600)  # aiokafka: up to request_timeout_ms (20 min in Faust)
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_faust_publisher_gives_a_missing_topic_up_after_its_metadata_wait() -> None:
    app = type("App", (), {"producer": _FaustProducer({"responses"})})()
    publisher = FaustPublisher(app, metadata_wait_s=0.2)
    await (await publisher.publish("responses", None, b"{}", ()))
    with pytest.raises(TopicNotFound) as info:
        await publisher.publish("kinfer.replies.gone", None, b"{}", ())
    assert is_permanent(info.value)
