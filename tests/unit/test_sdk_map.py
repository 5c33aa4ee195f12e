"""The SDK without Kafka: ``map`` (order, packing, bound, per-input errors), errors, outputs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from streams.errors import ErrorCode, KinferError
from streams.sdk import (
    DeadlineExceededError,
    ErrorAnswer,
    InputTooLargeError,
    InternalServerError,
    InvalidJsonError,
    InvalidRequestError,
    ReplyTimeout,
    UnknownModelError,
    error_from_answer,
    outputs_of,
)
from tests.support.fake_worker import FakeWorker


def texts(n: int) -> list[str]:
    return [f"text number {i}" + "!" * (i % 5) for i in range(n)]


async def test_results_come_in_input_order_packed_and_bounded() -> None:
    worker = FakeWorker(seed=1)
    inputs = texts(1000)
    results = [r async for r in worker.map("minilm", inputs, batch_size=64, max_in_flight=4)]
    assert [r.index for r in results] == list(range(1000))
    assert [r.input for r in results] == inputs
    assert [r.output[0] for r in results] == [float(len(t)) for t in inputs]
    assert [len(m) for m in worker.messages] == [64] * 15 + [40]
    assert worker.most_in_flight <= 4
    assert all(r.ok for r in results)


async def test_a_generator_is_read_no_faster_than_answers_come() -> None:
    worker = FakeWorker(seed=2)
    pulled = itertools.count()

    def endless() -> Iterator[str]:
        for i in pulled:
            yield f"item {i}"

    seen = 0
    results = worker.map("minilm", endless(), batch_size=10, max_in_flight=3)
    async with contextlib.aclosing(results):
        async for result in results:
            assert result.index == seen
            seen += 1
            if seen == 200:
                break
    # what was read beyond the results taken is at most the messages in flight
    assert next(pulled) <= 200 + 10 * 3 + 1


async def test_one_bad_input_fails_alone_and_its_neighbours_are_answered() -> None:
    worker = FakeWorker(seed=3)
    inputs = [*texts(10), "bad one", *texts(5)]
    results = [r async for r in worker.map("minilm", inputs, batch_size=8)]
    assert [r.index for r in results] == list(range(16))
    failed = [r for r in results if not r.ok]
    assert [r.index for r in failed] == [10]
    assert isinstance(failed[0].error, InvalidRequestError)
    assert failed[0].error.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(InvalidRequestError):
        failed[0].unwrap()
    assert [r.output[0] for r in results if r.ok] == [
        float(len(t)) for t in inputs if t != "bad one"
    ]
    # the second message (inputs 8..15) was answered with an error, then sent input by input
    assert [len(m) for m in worker.messages[:2]] == [8, 8]
    assert sorted(len(m) for m in worker.messages[2:]) == [1] * 8


async def test_a_deadline_error_is_every_input_s_without_retrying() -> None:
    worker = FakeWorker(seed=4)
    results = [r async for r in worker.map("minilm", ["a", "late", "b"], batch_size=3)]
    assert all(isinstance(r.error, DeadlineExceededError) for r in results)
    assert results[0].error is not None
    assert results[0].error.retriable
    assert len(worker.messages) == 1


async def test_unknown_model_ends_the_map() -> None:
    worker = FakeWorker(seed=5)
    with pytest.raises(UnknownModelError, match="model nope is not served here"):
        async for _ in worker.map("nope", texts(100), batch_size=10):
            pass


async def test_a_reply_timeout_ends_the_map_and_cancels_what_is_in_flight() -> None:
    worker = FakeWorker(seed=6, fail_after=5)
    got: list[int] = []

    async def consume() -> None:
        async for result in worker.map("minilm", texts(500), batch_size=10, max_in_flight=4):
            got.append(result.index)

    with pytest.raises(ReplyTimeout):
        await consume()
    assert got == list(range(len(got)))
    assert len(got) <= 50
    await asyncio.sleep(0.01)
    assert worker.in_flight == 0


async def test_async_inputs_with_linger_send_a_part_filled_message() -> None:
    worker = FakeWorker(seed=7)
    release = asyncio.Event()

    async def trickle() -> AsyncIterator[str]:
        yield "one"
        yield "two"
        await release.wait()  # nothing more for a while
        yield "three"

    results = worker.map("minilm", trickle(), batch_size=64, linger_ms=20)
    async with contextlib.aclosing(results):
        first = [await anext(results), await anext(results)]
        assert [r.input for r in first] == ["one", "two"]
        release.set()
        rest = [r async for r in results]
    assert [r.input for r in rest] == ["three"]
    assert worker.messages == [["one", "two"], ["three"]]


async def test_async_inputs_without_linger_fill_messages() -> None:
    worker = FakeWorker(seed=8)

    async def numbers() -> AsyncIterator[str]:
        for i in range(25):
            yield str(i)

    results = [r async for r in worker.map("minilm", numbers(), batch_size=10)]
    assert [r.input for r in results] == [str(i) for i in range(25)]
    assert [len(m) for m in worker.messages] == [10, 10, 5]


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("INVALID_JSON", InvalidJsonError),
        ("INVALID_REQUEST", InvalidRequestError),
        ("UNKNOWN_MODEL", UnknownModelError),
        ("INPUT_TOO_LARGE", InputTooLargeError),
        ("DEADLINE_EXCEEDED", DeadlineExceededError),
        ("INTERNAL", InternalServerError),
    ],
)
def test_each_error_code_has_its_exception(code: str, cls: type[ErrorAnswer]) -> None:
    answer = {"id": "r1", "error": {"code": code, "message": "why"}}
    error = error_from_answer(answer)
    assert type(error) is cls
    assert error.code == ErrorCode(code)
    assert (error.message, error.request_id, str(error)) == ("why", "r1", f"{code}: why")
    assert isinstance(error, KinferError)
    with pytest.raises(cls):
        outputs_of(answer, 1)


def test_every_error_code_is_covered_and_an_unknown_code_is_still_an_error() -> None:
    covered = {type(error_from_answer({"error": {"code": c.value}})) for c in ErrorCode}
    assert ErrorAnswer not in covered
    assert len(covered) == len(ErrorCode)
    future = error_from_answer({"id": 1, "error": {"code": "RATE_LIMITED", "message": "slow"}})
    assert type(future) is ErrorAnswer
    assert future.code == "RATE_LIMITED"
    assert error_from_answer({"id": 1, "outputs": []}) is None


def test_outputs_of_decodes_base64_rows_and_checks_their_count() -> None:
    rows = np.arange(6, dtype="<f4").reshape(2, 3) / 7
    encoded = [base64.b64encode(row.tobytes()).decode() for row in rows]
    decoded = outputs_of({"id": "a", "encoding": "base64", "outputs": encoded}, 2)
    np.testing.assert_array_equal(np.stack(decoded), rows)
    assert outputs_of({"id": "a", "outputs": [[1.0], [2.0]]}, 2) == [[1.0], [2.0]]
    with pytest.raises(KinferError, match="has 2 outputs for 3 inputs"):
        outputs_of({"id": "a", "outputs": [[1.0], [2.0]]}, 3)
    with pytest.raises(KinferError, match="malformed rows"):
        outputs_of({"id": "a", "encoding": "base64", "outputs": ["abc"]}, 1)
