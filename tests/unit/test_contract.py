"""The wire contract: decoding, validation, every error code, routing, encoding."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import contract
from streams.contract import Limits
from streams.errors import (
    DeadlineExceeded,
    ErrorCode,
    InputTooLarge,
    InternalError,
    InvalidJson,
    InvalidRequest,
    RequestError,
    UnknownModel,
)
from streams.model_io import TextInputs

LIMITS = Limits(max_message_bytes=4000, max_inputs=4, max_input_chars=50)


def decode(doc: object, headers: contract.Headers = ()) -> contract.Request:
    return contract.decode_request(orjson.dumps(doc), headers, LIMITS)


def decode_text(raw: bytes) -> contract.Request:
    """Decode, then check the inputs as a text model does once the request is routed."""
    request = contract.decode_request(raw, (), LIMITS)
    TextInputs(max_tokens=256).validate(request.inputs, LIMITS)
    return request


def test_decodes_a_full_request() -> None:
    request = decode(
        {"id": "r1", "model": "minilm", "version": "v", "inputs": ["a", "b"], "deadline_ms": 250}
    )
    assert request == contract.Request("r1", "minilm", "v", ["a", "b"], 250.0)
    assert request.top_k is None
    assert request.encoding == "float"
    assert request.deadline(100.0) == pytest.approx(100.25)


def test_integer_ids_and_no_deadline() -> None:
    request = decode({"id": 7, "model": "minilm", "inputs": ["x"]})
    assert request.id == 7
    assert request.deadline(5.0) is None


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"not json", ErrorCode.INVALID_JSON),
        (b"\xff\xfe\x00", ErrorCode.INVALID_JSON),
        (b'{"id": "a", "model": "minilm", "inputs": [NaN]}', ErrorCode.INVALID_JSON),
        (b'{"id": "a", "inputs": ["\\ud800"], "model": "minilm"}', ErrorCode.INVALID_JSON),
        (b"[" * 1500 + b"]" * 1500, ErrorCode.INVALID_JSON),
        (b"[1, 2]", ErrorCode.INVALID_REQUEST),
        (b'{"model": "minilm", "inputs": ["a"]}', ErrorCode.INVALID_REQUEST),
        (b'{"id": true, "model": "minilm", "inputs": ["a"]}', ErrorCode.INVALID_REQUEST),
        (b'{"id": "a", "inputs": ["a"]}', ErrorCode.INVALID_REQUEST),
        (b'{"id": "a", "model": "minilm", "inputs": []}', ErrorCode.INVALID_REQUEST),
        (b'{"id": "a", "model": "minilm", "inputs": "a"}', ErrorCode.INVALID_REQUEST),
        (b'{"id": "a", "model": "minilm", "inputs": [1]}', ErrorCode.INVALID_REQUEST),
        (b'{"id": "a", "model": "minilm", "inputs": ["a"], "extra": 1}', ErrorCode.INVALID_REQUEST),
        (
            b'{"id": "a", "model": "minilm", "inputs": ["a"], "deadline_ms": -1}',
            ErrorCode.INVALID_REQUEST,
        ),
        (
            b'{"id": "a", "model": "minilm", "inputs": ["a"], "deadline_ms": "5"}',
            ErrorCode.INVALID_REQUEST,
        ),
        (
            b'{"id": "a", "model": "minilm", "inputs": ["a","b","c","d","e"]}',
            ErrorCode.INPUT_TOO_LARGE,
        ),
        (
            b'{"id": "a", "model": "minilm", "inputs": ["' + b"x" * 51 + b'"]}',
            ErrorCode.INPUT_TOO_LARGE,
        ),
        (
            b'{"id": "a", "model": "minilm", "inputs": ["' + b"x" * 5000 + b'"]}',
            ErrorCode.INPUT_TOO_LARGE,
        ),
    ],
)
def test_bad_requests_get_typed_errors(raw: bytes, code: ErrorCode) -> None:
    with pytest.raises(RequestError) as info:
        decode_text(raw)
    assert info.value.code is code
    assert info.value.message


@pytest.mark.parametrize(
    ("inputs", "error", "message"),
    [
        (
            ["ok", 7, "x" * 51],
            InvalidRequest,
            "inputs[1] must be a string (this model takes text), got a number",
        ),
        (["ok", "x" * 51, 7], InputTooLarge, "inputs[1] length in characters is 51, over the"),
        (
            ["ok", None],
            InvalidRequest,
            "inputs[1] must be a string (this model takes text), got null",
        ),
        (["ok", "ok", ["a"]], InvalidRequest, "inputs[2] must be a string (this model takes text)"),
        (["x" * 50, "x" * 52], InputTooLarge, "inputs[1] length in characters is 52, over the"),
    ],
)
def test_the_first_bad_input_is_named_by_its_index(
    inputs: list[object], error: type[RequestError], message: str
) -> None:
    with pytest.raises(error) as info:
        decode_text(orjson.dumps({"id": "a", "model": "minilm", "inputs": inputs}))
    assert info.value.message.startswith(message)


def first_bad_input(inputs: list[object]) -> str | None:
    """The message of the first bad input, checked one input at a time: the reference."""
    for index, text in enumerate(inputs):
        if not isinstance(text, str):
            return f"inputs[{index}] must be a string (this model takes text)"
        if len(text) > LIMITS.max_input_chars:
            return f"inputs[{index}] length in characters is {len(text)}"
    return None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=60),
            st.integers(-(2**63), 2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
            st.booleans(),
            st.none(),
            st.lists(st.text(max_size=3), max_size=2),
        ),
        min_size=1,
        max_size=LIMITS.max_inputs,
    )
)
def test_inputs_are_checked_as_one_at_a_time_would(inputs: list[object]) -> None:
    expected = first_bad_input(inputs)
    raw = orjson.dumps({"id": "a", "model": "minilm", "inputs": inputs})
    if expected is None:
        assert decode_text(raw).inputs == inputs
    else:
        with pytest.raises(RequestError) as info:
            decode_text(raw)
        assert info.value.message.startswith(expected)


def test_inputs_at_the_limit_are_accepted() -> None:
    inputs = ["x" * 50, "", "é" * 50]
    raw = orjson.dumps({"id": "a", "model": "minilm", "inputs": inputs})
    assert decode_text(raw).inputs == inputs


def test_tombstone_is_invalid_json() -> None:
    with pytest.raises(InvalidJson):
        contract.decode_request(None, (), LIMITS)


def test_illegal_reply_to_is_rejected_and_not_followed() -> None:
    headers = (("reply-to", b"no spaces allowed"),)
    with pytest.raises(InvalidRequest, match="reply-to"):
        decode({"id": "a", "model": "minilm", "inputs": ["a"]}, headers)
    assert contract.route_for(headers, b"k", "default").topic == "default"


def test_route_follows_reply_to_and_echoes_x_and_trace_context_headers() -> None:
    traceparent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = (
        ("reply-to", b"answers.mine"),
        ("x-request-id", b"abc"),
        ("X-Tenant", b"t1"),
        ("traceparent", traceparent),
        ("tracestate", b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        ("baggage", b"user=1"),
        ("other", b"no"),
    )
    route = contract.route_for(headers, b"key-1", "default")
    assert route.topic == "answers.mine"
    assert route.key == b"key-1"
    assert route.headers == (
        contract.CONTENT_TYPE,
        ("x-request-id", b"abc"),
        ("X-Tenant", b"t1"),
        ("traceparent", traceparent),
        ("tracestate", b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    ), "x- and W3C Trace Context headers, in their order; not reply-to nor the others"


def test_every_error_code_encodes_with_its_code() -> None:
    errors: list[RequestError] = [
        InvalidJson("bad"),
        InvalidRequest("shape"),
        UnknownModel("bert", None, {"minilm": ["v1"]}),
        InputTooLarge("inputs", 9, 4, "MAX_INPUTS_PER_REQUEST"),
        DeadlineExceeded(12.0),
        InternalError("boom"),
    ]
    assert {e.code for e in errors} == set(ErrorCode)
    for error in errors:
        doc = orjson.loads(contract.encode_error("id-1", error))
        assert doc == {"id": "id-1", "error": {"code": error.code.value, "message": error.message}}


def test_result_encodes_numpy_outputs() -> None:
    request = contract.Request("r", "minilm", None, ("a",))
    outputs = np.arange(6, dtype=np.float32).reshape(2, 3)
    doc = orjson.loads(contract.encode_result(request, "v1", outputs, {"total_ms": 1.5}))
    assert doc == {
        "id": "r",
        "model": "minilm",
        "version": "v1",
        "outputs": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
        "timing": {"total_ms": 1.5},
    }


def test_peek_id_recovers_ids_from_invalid_requests() -> None:
    assert contract.peek_id(b'{"id": "x", "inputs": 3}') == "x"
    assert contract.peek_id(b'{"id": {"nested": 1}}') is None
    assert contract.peek_id(b"garbage") is None


def test_headers_are_normalised_from_any_client_shape() -> None:
    assert contract.normalise_headers({"a": b"1", "b": None}) == (("a", b"1"), ("b", b""))
    assert contract.normalise_headers([(b"k", "v")]) == (("k", b"v"),)
    assert contract.normalise_headers(None) == ()
