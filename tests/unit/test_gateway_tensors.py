"""The gateway's tensor mapping: protocol tensors <-> the Kafka contract, both model kinds."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from streams.gateway.catalog import ModelCatalog
from streams.gateway.errors import BadInput, ModelFailed, ModelNotFound
from streams.gateway.rest_codec import decode_infer, encode_infer
from streams.gateway.service import InferResponse
from streams.gateway.signatures import ImageClassification, TextEmbedding
from streams.gateway.tensors import (
    InputTensor,
    OutputTensor,
    RequestedOutput,
    check_shape,
    from_json_data,
    from_raw,
    from_typed,
    pack_bytes,
    unpack_bytes,
)
from streams.wire_encoding import base64_rows_json

TEXT = TextEmbedding(dim=4)
DIGITS = ImageClassification(image_shape=(8, 8), classes=10)


def texts_tensor(*texts: str, shape: tuple[int, ...] | None = None) -> InputTensor:
    data = [t.encode() for t in texts]
    return InputTensor("text", "BYTES", shape or (len(texts),), data)


def image_tensor(images: np.ndarray, datatype: str = "FP32") -> InputTensor:
    return InputTensor("image", datatype, images.shape, images.reshape(-1))


# -- tensors ---------------------------------------------------------------------------------


def test_bytes_elements_round_trip_through_the_length_prefixed_layout() -> None:
    items = [b"", b"Kafka", "東京".encode(), b"\x00\xff"]
    raw = pack_bytes(items)
    assert raw[:4] == struct.pack("<I", 0)
    assert unpack_bytes("t", raw, len(items)) == items


@pytest.mark.parametrize(
    ("raw", "count", "problem"),
    [
        (b"\x05\x00\x00\x00abc", 1, "runs past"),
        (b"\x01\x00", 1, "inside an element's length"),
        (pack_bytes([b"a", b"b"]), 3, "expected 3 BYTES elements, got 2"),
    ],
)
def test_malformed_bytes_data_is_bad_input(raw: bytes, count: int, problem: str) -> None:
    with pytest.raises(BadInput, match=problem):
        unpack_bytes("text", raw, count)


def test_json_data_may_be_flat_or_nested_row_major() -> None:
    flat = from_json_data("x", "INT64", (2, 2), [1, 2, 3, 4])
    nested = from_json_data("x", "INT64", (2, 2), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(flat.data, nested.data)
    assert flat.data.dtype == np.int64  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "problem"),
    [
        ("FP32", (3,), [1.0, 2.0], "has 3 elements, 'data' has 2"),
        ("INT8", (1,), [300], "out of the range of INT8"),
        ("UINT8", (1,), [-1], "out of the range of UINT8"),
        ("INT32", (1,), [1.5], "must hold integers"),
        ("FP32", (1,), ["1"], "must hold numbers"),
        ("FP32", (1,), [True], "must hold numbers"),
        ("FP16", (1,), [1e6], "out of the range of FP16"),
        ("BOOL", (1,), [1], "must hold booleans"),
        ("BYTES", (1,), [3], "must hold strings"),
        ("FP32", (1,), {"a": 1}, "must be an array"),
    ],
)
def test_json_data_that_does_not_fit_is_bad_input_naming_the_tensor(
    datatype: str, shape: tuple[int, ...], data: Any, problem: str
) -> None:
    with pytest.raises(BadInput, match=problem) as caught:
        from_json_data("x", datatype, shape, data)
    assert "'x'" in caught.value.message


@pytest.mark.parametrize(
    ("datatype", "shape", "problem"),
    [
        ("FLOAT", [1], "is not one of"),
        ("BF16", [1], "is not one of"),
        ("FP32", [-1], "integers >= 0"),
        ("FP32", [1.5], "integers >= 0"),
        ("FP32", "1", "array of integers"),
    ],
)
def test_unknown_datatypes_and_bad_shapes_are_bad_input(
    datatype: str, shape: Any, problem: str
) -> None:
    with pytest.raises(BadInput, match=problem):
        check_shape("x", datatype, shape)


def test_raw_numbers_are_little_endian_and_sized_by_the_shape() -> None:
    values = np.arange(6, dtype="<f4")
    tensor = from_raw("x", "FP32", (2, 3), values.tobytes())
    np.testing.assert_array_equal(tensor.data, values)
    with pytest.raises(BadInput, match="needs 24 bytes, got 20"):
        from_raw("x", "FP32", (2, 3), values.tobytes()[:20])


def test_typed_contents_are_checked_against_the_shape() -> None:
    tensor = from_typed("x", "INT64", (2,), [7, 8])
    np.testing.assert_array_equal(tensor.data, [7, 8])
    with pytest.raises(BadInput, match="has 3 elements, its contents have 2"):
        from_typed("x", "INT64", (3,), [7, 8])


def test_outputs_are_written_raw_and_as_json_data() -> None:
    rows = np.array([[0.5, -1.25]], np.float32)
    tensor = OutputTensor("embedding", "FP32", (1, 2), rows.reshape(-1))
    assert np.frombuffer(tensor.raw(), "<f4").tolist() == [0.5, -1.25]
    assert orjson.loads(orjson.dumps(tensor.json_data(), option=orjson.OPT_SERIALIZE_NUMPY)) == [
        0.5,
        -1.25,
    ]
    text = OutputTensor("c", "BYTES", (1,), [b"0.9:7"])
    assert text.raw() == pack_bytes([b"0.9:7"])
    assert text.json_data() == ["0.9:7"]


# -- text embedding --------------------------------------------------------------------------


def test_texts_become_the_kafka_inputs_in_order() -> None:
    assert TEXT.kafka_inputs([texts_tensor("a", "东京")]) == ["a", "东京"]
    assert TEXT.kafka_inputs([texts_tensor("a", "b", shape=(2, 1))]) == ["a", "b"]


@pytest.mark.parametrize(
    ("tensors", "problem"),
    [
        ([InputTensor("input", "BYTES", (1,), [b"a"])], "exactly one input, 'text'"),
        ([texts_tensor("a"), texts_tensor("b")], "exactly one input"),
        ([InputTensor("text", "FP32", (1,), np.zeros(1, np.float32))], "must be BYTES"),
        ([texts_tensor("a", "b", shape=(1, 2))], r"shape \[n\] or \[n, 1\]"),
        ([InputTensor("text", "BYTES", (1,), [b"\xff\xfe"])], "element 0 is not valid UTF-8"),
        ([InputTensor("text", "BYTES", (0,), [])], "holds no texts"),
    ],
)
def test_text_inputs_that_do_not_fit_are_bad_input(
    tensors: list[InputTensor], problem: str
) -> None:
    with pytest.raises(BadInput, match=problem):
        TEXT.kafka_inputs(tensors)


def test_a_base64_answer_becomes_an_fp32_embedding_tensor() -> None:
    rows = np.array([[0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]], np.float32)
    answer = orjson.loads(
        b'{"id":"x","model":"minilm","version":"0.1.0","encoding":"base64","outputs":'
        + base64_rows_json(rows)
        + b"}"
    )
    [embedding] = TEXT.answer_outputs(answer, [])
    assert (embedding.name, embedding.datatype, embedding.shape) == ("embedding", "FP32", (2, 4))
    np.testing.assert_array_equal(np.asarray(embedding.data).reshape(2, 4), rows)


def test_text_outputs_refuse_unknown_names_duplicates_and_classification() -> None:
    TEXT.check_outputs([RequestedOutput("embedding")])
    with pytest.raises(BadInput, match="no output 'label'"):
        TEXT.check_outputs([RequestedOutput("label")])
    with pytest.raises(BadInput, match="requested twice"):
        TEXT.check_outputs([RequestedOutput("embedding"), RequestedOutput("embedding")])
    with pytest.raises(BadInput, match="'classification' is supported not on this model"):
        TEXT.check_outputs([RequestedOutput("embedding", classification=2)])


def test_an_answer_without_rows_is_a_model_failure() -> None:
    with pytest.raises(ModelFailed):
        TEXT.answer_outputs({"id": "x", "outputs": "nonsense", "encoding": "base64"}, [])


# -- image classification --------------------------------------------------------------------


@pytest.mark.parametrize("layout", [(2, 8, 8), (2, 64)])
@pytest.mark.parametrize("datatype", ["FP32", "INT64", "UINT8"])
def test_images_become_8x8_rows_of_numbers(layout: tuple[int, ...], datatype: str) -> None:
    images = (np.arange(128) % 17).reshape(layout)
    rows = DIGITS.kafka_inputs([image_tensor(images.astype(np.float64), datatype)])
    assert np.asarray(rows).shape == (2, 8, 8)
    np.testing.assert_array_equal(np.asarray(rows).reshape(-1), images.reshape(-1))
    assert all(type(value) is float for value in rows[1][7])  # JSON numbers for the worker


@pytest.mark.parametrize(
    ("tensor", "problem"),
    [
        (image_tensor(np.zeros((1, 8, 7))), r"\[n, 8, 8\] or \[n, 64\]"),
        (image_tensor(np.zeros((1, 65))), r"\[n, 8, 8\] or \[n, 64\]"),
        (image_tensor(np.zeros((0, 64))), "holds no images"),
        (InputTensor("image", "BYTES", (1,), [b"x"]), "must be numeric"),
        (InputTensor("image", "BOOL", (1, 64), np.zeros(64, bool)), "must be numeric"),
        (InputTensor("pixels", "FP32", (1, 64), np.zeros(64)), "exactly one input, 'image'"),
    ],
)
def test_image_inputs_that_do_not_fit_are_bad_input(tensor: InputTensor, problem: str) -> None:
    with pytest.raises(BadInput, match=problem):
        DIGITS.kafka_inputs([tensor])


def digits_answer(probabilities: np.ndarray) -> dict[str, Any]:
    rows = [{"label": int(p.argmax()), "probabilities": p.tolist()} for p in probabilities]
    return {"id": "x", "model": "digits", "version": "1", "outputs": rows}


def test_a_classifier_answer_becomes_label_and_probabilities() -> None:
    probabilities = np.eye(10, dtype=np.float32)[[7, 2]] * 0.9 + 0.01
    label, probs = DIGITS.answer_outputs(digits_answer(probabilities), [])
    assert (label.name, label.datatype, label.shape) == ("label", "INT64", (2,))
    assert list(label.data) == [7, 2]
    assert (probs.datatype, probs.shape) == ("FP32", (2, 10))
    np.testing.assert_array_equal(np.asarray(probs.data).reshape(2, 10), probabilities)
    [only] = DIGITS.answer_outputs(digits_answer(probabilities), [RequestedOutput("label")])
    assert only.name == "label"


def test_classification_gives_the_k_most_likely_labels_most_likely_first() -> None:
    probabilities = np.array([[0.05] * 7 + [0.5, 0.1, 0.05]], np.float32)
    requested = [RequestedOutput("probabilities", classification=2)]
    DIGITS.check_outputs(requested)
    [top] = DIGITS.answer_outputs(digits_answer(probabilities), requested)
    assert (top.datatype, top.shape) == ("BYTES", (1, 2))
    assert top.data == [b"0.5:7", b"0.1:8"]


@pytest.mark.parametrize(
    ("requested", "problem"),
    [
        ([RequestedOutput("probabilities", classification=11)], "from 1 to 10"),
        ([RequestedOutput("probabilities", classification=0)], "from 1 to 10"),
        ([RequestedOutput("label", classification=1)], "only on 'probabilities'"),
        ([RequestedOutput("embedding")], "no output 'embedding'"),
    ],
)
def test_classifier_outputs_that_cannot_be_honoured_are_bad_input(
    requested: list[RequestedOutput], problem: str
) -> None:
    with pytest.raises(BadInput, match=problem):
        DIGITS.check_outputs(requested)


# -- catalog ---------------------------------------------------------------------------------

CATALOG = ModelCatalog.from_repository()


def test_the_shipped_repository_lists_both_models_with_their_tensors() -> None:
    assert {"minilm", "digits"} <= set(CATALOG.names())
    minilm = CATALOG.metadata("minilm")
    assert minilm["versions"][0] == "0.1.0", "the default version first"
    assert "0.1.0-bf16" in minilm["versions"]
    assert minilm["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert minilm["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    digits = CATALOG.metadata("digits", "1")
    assert digits["versions"] == ["1"]
    assert digits["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8]}]
    assert [o["name"] for o in digits["outputs"]] == ["label", "probabilities"]
    assert digits["outputs"][1]["shape"] == [-1, 10]


def test_versions_resolve_by_name_alias_or_default() -> None:
    assert CATALOG.resolve("minilm").version == "0.1.0"
    assert CATALOG.resolve("minilm", "default").version == "0.1.0"
    assert CATALOG.resolve("minilm", "bf16").version == "0.1.0-bf16"
    assert CATALOG.resolve("minilm", "0.1.0-bf16").version == "0.1.0-bf16"


def test_unknown_models_and_versions_name_what_there_is() -> None:
    with pytest.raises(ModelNotFound, match=r"unknown model 'nope'; models: .*minilm"):
        CATALOG.resolve("nope")
    with pytest.raises(ModelNotFound, match=r"no version '9'; versions: 0\.1\.0"):
        CATALOG.resolve("minilm", "9")


# -- the REST body ---------------------------------------------------------------------------


def test_a_json_infer_body_is_decoded_with_its_options() -> None:
    body = orjson.dumps(
        {
            "id": "r1",
            "parameters": {"timeout": 5000, "binary_data_output": True},
            "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}],
            "outputs": [{"name": "embedding", "parameters": {"binary_data": False}}],
        }
    )
    request, binary = decode_infer(body, None, "minilm", "0.1.0")
    assert (request.model, request.version, request.id) == ("minilm", "0.1.0", "r1")
    assert request.inputs[0].data == [b"a", b"b"]
    assert request.outputs == [RequestedOutput("embedding", binary=False)]
    assert request.parameters["timeout"] == 5000
    assert binary is True


def test_binary_tensor_data_follows_the_json_header_in_input_order() -> None:
    images = np.arange(64, dtype="<f4") % 17
    texts = pack_bytes([b"x"])
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 256},
                },
                {
                    "name": "text",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(texts)},
                },
            ]
        }
    )
    body = header + images.tobytes() + texts
    request, _ = decode_infer(body, str(len(header)), "m", None)
    np.testing.assert_array_equal(request.inputs[0].data, images)
    assert request.inputs[1].data == [b"x"]
    with pytest.raises(BadInput, match="1 bytes of binary data no input claims"):
        decode_infer(body + b"!", str(len(header)), "m", None)
    with pytest.raises(BadInput, match="must be a length within the body"):
        decode_infer(body, str(len(body) + 1), "m", None)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"inputs": []}', "non-empty array"),
        (b'{"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES"}]}', "neither 'data'"),
        (b'{"inputs": [{"shape": [1]}]}', "needs a 'name'"),
        (b'{"input": []}', "unknown fields"),
        (b'{"id": 3, "inputs": [1]}', "'id' must be a string"),
        (
            b'{"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["a"]}], '
            b'"outputs": [{"name": "e", "parameters": {"classification": "2"}}]}',
            "integer",
        ),
    ],
)
def test_malformed_infer_bodies_are_bad_input(body: bytes, problem: str) -> None:
    with pytest.raises(BadInput, match=problem):
        decode_infer(body, None, "minilm", None)


def test_an_answer_is_json_or_binary_as_each_output_asks() -> None:
    rows = np.array([[1.5, 2.5]], np.float32)
    label = OutputTensor("label", "INT64", (1,), np.array([7]))
    embedding = OutputTensor("embedding", "FP32", (1, 2), rows.reshape(-1))
    answer = InferResponse("m", "1", "r1", [label, embedding])
    body, length = encode_infer(answer, [], binary_default=False)
    assert length is None
    doc = orjson.loads(body)
    assert doc["id"] == "r1"
    assert doc["outputs"][1] == {
        "name": "embedding",
        "datatype": "FP32",
        "shape": [1, 2],
        "data": [1.5, 2.5],
    }
    requested = [RequestedOutput("label", binary=False), RequestedOutput("embedding")]
    body, length = encode_infer(answer, requested, binary_default=True)
    assert length is not None
    doc = orjson.loads(body[:length])
    assert doc["outputs"][0]["data"] == [7]
    assert doc["outputs"][1]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(body[length:], "<f4").tolist() == [1.5, 2.5]
