"""Output encodings: base64 rows byte for byte as the standard library writes them, and back."""

from __future__ import annotations

import base64
import shutil
import subprocess

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streams import cli, contract, wire_encoding
from streams.errors import InvalidRequest

LIMITS = contract.Limits()
TIMING = {"queue_ms": 1.5, "compute_ms": 20.0, "batch_size": 64}


def request(encoding: wire_encoding.Encoding) -> contract.Request:
    return contract.Request("r", "minilm", None, ("a",), None, encoding)


def answer(rows: object, encoding: wire_encoding.Encoding) -> dict[str, object]:
    value = contract.encode_result(request(encoding), "v1", rows, TIMING)
    doc = orjson.loads(value)
    assert isinstance(doc, dict)
    return doc


def reference(rows: np.ndarray) -> list[str]:
    """The base64 of each row, one row at a time, with the standard library."""
    return [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in rows]


@pytest.mark.parametrize("dim", [384, 1, 2, 3, 5, 383])
@pytest.mark.parametrize("n", [0, 1, 64])
def test_base64_rows_are_the_standard_base64_of_each_row(n: int, dim: int) -> None:
    rows = np.random.default_rng(n * 1000 + dim).standard_normal((n, dim)).astype(np.float32)
    doc = answer(rows, "base64")
    assert doc["outputs"] == reference(rows)
    decoded = wire_encoding.decode_rows(doc)
    assert decoded.dtype == np.float32
    if n:
        assert decoded.shape == (n, dim)
        np.testing.assert_allclose(decoded, rows, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(decoded, wire_encoding.decode_rows(answer(rows, "float")))
    else:
        assert decoded.shape == (0, 0)


def test_base64_answer_envelope() -> None:
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    value = contract.encode_result(request("base64"), "v1", rows, TIMING)
    doc = orjson.loads(value)
    assert list(doc) == ["id", "model", "version", "encoding", "outputs", "timing"]
    assert doc == {
        "id": "r",
        "model": "minilm",
        "version": "v1",
        "encoding": "base64",
        "outputs": reference(rows),
        "timing": TIMING,
    }
    assert doc["outputs"][1] == "AABAQAAAgEAAAKBA"  # 3.0, 4.0, 5.0 as little-endian float32


def test_float_answers_are_unchanged() -> None:
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    value = contract.encode_result(request("float"), "v1", rows, TIMING)
    assert value == (
        b'{"id":"r","model":"minilm","version":"v1","outputs":[[0.0,1.0,2.0],[3.0,4.0,5.0]],'
        b'"timing":{"queue_ms":1.5,"compute_ms":20.0,"batch_size":64}}'
    )


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_outputs_that_are_not_contiguous_float32_are_converted(
    encoding: wire_encoding.Encoding,
) -> None:
    wide = np.random.default_rng(1).standard_normal((8, 6))
    strided = wide.astype(np.float32)[:, ::2]  # not C-contiguous
    for outputs in (wide[:, ::2], strided, strided.astype(">f4"), strided.tolist()):
        decoded = wire_encoding.decode_rows(answer(outputs, encoding))
        np.testing.assert_array_equal(decoded, strided)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ({}, "float"),
        ({"encoding": None}, "float"),
        ({"encoding": "float"}, "float"),
        ({"encoding": "base64"}, "base64"),
    ],
)
def test_requests_decode_their_encoding(field: dict[str, object], expected: str) -> None:
    doc = {"id": "r", "model": "minilm", "inputs": ["a"], **field}
    assert contract.decode_request(orjson.dumps(doc), (), LIMITS).encoding == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("hex", "'hex'"),
        ("BASE64", "'BASE64'"),
        ("", "''"),
        (64, "a number"),
        (True, "a boolean"),
        (["base64"], "an array"),
        ({"kind": "base64"}, "an object"),
    ],
)
def test_unknown_or_non_string_encodings_are_invalid_requests(value: object, shown: str) -> None:
    raw = orjson.dumps({"id": "r", "model": "minilm", "inputs": ["a"], "encoding": value})
    with pytest.raises(InvalidRequest) as info:
        contract.decode_request(raw, (), LIMITS)
    assert info.value.message == (
        f'\'encoding\' must be "float" or "base64" (null means "float"), got {shown}'
    )


def test_encode_request_sends_encoding_only_when_not_the_default() -> None:
    plain = orjson.loads(contract.encode_request(["a"], request_id="r"))
    assert "encoding" not in plain  # float requests stay acceptable to workers that predate it
    binary = contract.encode_request(["a"], request_id="r", encoding="base64")
    assert orjson.loads(binary)["encoding"] == "base64"
    assert contract.decode_request(binary, (), LIMITS).encoding == "base64"
    with pytest.raises(InvalidRequest):
        contract.encode_request(["a"], request_id="r", encoding="hex")  # type: ignore[arg-type]


def test_decode_rows_refuses_what_it_cannot_read() -> None:
    rows = np.ones((2, 3), np.float32)
    good = answer(rows, "base64")
    outputs = good["outputs"]
    assert isinstance(outputs, list)
    cases: list[dict[str, object]] = [
        {"id": "r", "error": {"code": "INTERNAL", "message": "boom"}},
        {**good, "encoding": "hex"},
        {**good, "outputs": [outputs[0], outputs[1][:-4]]},  # rows of different lengths
        {**good, "outputs": ["AAA"]},  # not whole base64 quanta
        {**good, "outputs": ["AAAAAAA="]},  # 5 bytes: not whole float32 values
        {**good, "outputs": ["AACAPwAAgD8AAIA/", "AACAPwAAgD8AAIA="]},  # padding differs
        {**good, "outputs": ["AACAPwAAgD8AAIA=", "AACAPwAAgD8AAIA/"]},
        {**good, "outputs": ["AACAPwAAgD8AAI=A"]},  # misplaced padding
        {**good, "outputs": ["AACAPwAAgD8A=AA/"]},
        {**good, "outputs": ["AACAPwAA*D8AAIA/"]},  # not the base64 alphabet
    ]
    for case in cases:
        with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
            wire_encoding.decode_rows(case)


def test_base64_needs_a_matrix() -> None:
    with pytest.raises(ValueError, match="2-D"):
        wire_encoding.base64_rows_json(np.ones(3, np.float32))
    assert wire_encoding.base64_rows_json(np.ones((0,), np.float32)) == b"[]"


def test_the_cli_offers_every_encoding() -> None:
    assert cli.INFER_ENCODINGS == wire_encoding.ENCODINGS


def test_a_base64_row_decodes_with_the_command_line_tools_of_the_readme() -> None:
    """``base64 -d | od -t f4`` (coreutils) reads a row back, as the README shows."""
    rows = np.array([[0.5, -1.25, 3.0, 1e-3]], np.float32)
    row = answer(rows, "base64")["outputs"]
    assert isinstance(row, list)
    if not (shutil.which("base64") and shutil.which("od")):
        pytest.skip("needs the coreutils base64 and od")
    decoded = subprocess.run(
        "base64 -d | od -A n -t f4 -v",
        shell=True,
        input=row[0].encode(),
        capture_output=True,
        check=True,
    ).stdout.split()
    np.testing.assert_allclose(np.array(decoded, np.float32), rows[0])


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=9),
        elements=st.floats(width=32, allow_nan=False),
    )
)
def test_base64_round_trips_any_matrix_exactly(rows: np.ndarray) -> None:
    doc = answer(rows, "base64")
    assert doc["outputs"] == reference(rows)
    decoded = wire_encoding.decode_rows(doc)
    if rows.shape[0]:
        # bit for bit, signed zeros and infinities included
        assert decoded.tobytes() == rows.astype("<f4").tobytes()
        assert decoded.shape == rows.shape
