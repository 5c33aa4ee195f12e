"""The reply-to allow-list: which topics a request may have its answer written to."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import orjson
import pytest

from streams import contract
from streams.batch_model import FunctionModel
from streams.batching import MicroBatcher
from streams.contract import Limits
from streams.errors import InvalidRequest
from streams.pipeline import RequestPipeline
from streams.replyto import ReplyToPolicy
from streams.settings import Settings
from tests.support.models import text_table
from tests.unit.test_pipeline import FakePublisher, fake_infer, inbound

SETTINGS = Settings(request_topic="requests", response_topic="responses")
POLICY = ReplyToPolicy.from_settings(SETTINGS)
GOOD = orjson.dumps({"id": "r1", "model": "minilm", "inputs": ["abc"]})


@pytest.mark.parametrize(
    "topic",
    ["responses", "kinfer.responses", "kinfer.replies.svc-a", "kinfer.replies.a.b_c-1"],
)
def test_the_default_pattern_admits_the_response_topic_and_the_reply_prefix(topic: str) -> None:
    assert POLICY.refusal(topic) is None


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("__consumer_offsets", "never allowed: names starting with '__'"),
        ("__transaction_state", "never allowed"),
        ("requests", "never allowed: it is this worker's request or dead-letter topic"),
        ("requests.dlq", "never allowed"),
        ("orders", "not allowed: answers go to 'responses'"),
        ("kinfer.replies.", "not allowed"),  # the prefix alone
        ("kinfer.responses.evil", "not allowed"),  # the whole name must match
        ("xkinfer.replies.a", "not allowed"),
    ],
)
def test_every_other_topic_is_refused_with_its_reason(topic: str, why: str) -> None:
    refusal = POLICY.refusal(topic)
    assert refusal is not None
    assert why in refusal
    assert "KINFER_REPLY_TO_PATTERN" in refusal or "never" in refusal


def test_a_pattern_that_admits_everything_still_refuses_the_never_allowed() -> None:
    policy = ReplyToPolicy.from_settings(
        Settings(request_topic="requests", dlq_topic="dead", reply_to_pattern=".*")
    )
    assert policy.refusal("orders") is None
    for topic in ("requests", "dead", "__consumer_offsets", "__anything"):
        assert policy.refusal(topic) is not None, topic


def test_a_custom_pattern_replaces_the_default() -> None:
    policy = ReplyToPolicy.from_settings(Settings(reply_to_pattern=r"team-a\..+"))
    assert policy.refusal("team-a.answers") is None
    assert policy.refusal("kinfer.replies.x") is not None
    assert policy.refusal(policy.response_topic) is None, "the response topic always is"
    assert policy.pattern == re.compile(r"team-a\..+")


def test_route_follows_an_allowed_reply_to_only() -> None:
    allowed = (("reply-to", b"kinfer.replies.me"), ("x-request-id", b"7"))
    assert contract.route_for(allowed, b"k", "responses", POLICY).topic == "kinfer.replies.me"
    for bad in (b"__consumer_offsets", b"requests", b"requests.dlq", b"orders"):
        route = contract.route_for((("reply-to", bad),), b"k", "responses", POLICY)
        assert route.topic == "responses", bad
    # one refused reply-to among allowed ones: the answer (an error) goes to the default topic
    mixed = (("reply-to", b"kinfer.replies.me"), ("Reply-To", b"__consumer_offsets"))
    assert contract.route_for(mixed, b"k", "responses", POLICY).topic == "responses"


def test_decoding_answers_a_refused_reply_to_with_invalid_request() -> None:
    limits = Limits()
    headers = (("reply-to", b"__consumer_offsets"),)
    with pytest.raises(InvalidRequest, match="never allowed") as caught:
        contract.decode_request(GOOD, headers, limits, POLICY)
    assert caught.value.dead_letter
    ok = contract.decode_request(GOOD, (("reply-to", b"kinfer.replies.x"),), limits, POLICY)
    assert ok.id == "r1"
    # without a policy (library use) any legal name is followed, as before
    assert contract.decode_request(GOOD, (("reply-to", b"orders"),), limits).id == "r1"


@pytest.fixture
async def batcher() -> AsyncIterator[MicroBatcher]:
    batcher = MicroBatcher(FunctionModel(fake_infer), max_batch=8, max_wait_s=0.001)
    batcher.start()
    yield batcher
    await batcher.stop()


@pytest.mark.parametrize(
    "reply_to", [b"__consumer_offsets", b"requests", b"requests.dlq", b"other-app.orders"]
)
async def test_the_pipeline_answers_on_the_default_topic_and_dead_letters(
    batcher: MicroBatcher, reply_to: bytes
) -> None:
    publisher = FakePublisher()
    pipeline = RequestPipeline(
        models=text_table(batcher),
        publisher=publisher,
        default_topic="responses",
        dead_letter_topic="requests.dlq",
        limits=Limits(),
        reply_to=POLICY,
        retry_backoff_s=(0.001, 0.01),
    )
    headers = (("reply-to", reply_to), ("x-request-id", b"rid"))
    await pipeline.handle(pipeline.prepare(inbound(GOOD, headers=headers)))
    topics = [record[0] for record in publisher.records]
    assert topics == ["responses", "requests.dlq"], "an error answer, then the dead letter"
    answer = orjson.loads(publisher.records[0][2])
    assert answer["id"] == "r1"
    assert answer["error"]["code"] == "INVALID_REQUEST"
    assert reply_to.decode() in answer["error"]["message"]
    assert publisher.records[1][2] == GOOD, "the dead letter is the request unchanged"
    assert publisher.records[1][3]["kinfer-error-code"] == b"INVALID_REQUEST"
