"""The REST infer body, both ways: JSON, and the binary tensor data extension.

Request::

    {"id": "r1", "parameters": {"timeout": 2000000, "binary_data_output": true},
     "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}],
     "outputs": [{"name": "embedding", "parameters": {"binary_data": false}}]}

With the binary tensor data extension (what tritonclient sends by default) the body is that
JSON, whose length is the ``Inference-Header-Content-Length`` header, followed by the raw
bytes of each input whose ``parameters.binary_data_size`` says how many are its, in the order
of ``inputs``. An answer's output is written the same way when its requested output says
``"binary_data": true``, or, when it says nothing, when the request's ``binary_data_output``
parameter is true; the answer then carries the same header.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from streams.gateway.errors import BadInput
from streams.gateway.service import InferRequest, InferResponse
from streams.gateway.tensors import (
    InputTensor,
    RequestedOutput,
    check_shape,
    from_json_data,
    from_raw,
)

__all__ = ["HEADER_LENGTH", "decode_infer", "encode_infer"]

#: The binary tensor data extension's header: the length of the JSON part of the body.
HEADER_LENGTH = "Inference-Header-Content-Length"


def decode_infer(
    body: bytes, header_length: str | None, model: str, version: str | None
) -> tuple[InferRequest, bool]:
    """The infer request of a REST body, and whether outputs default to binary."""
    json_part, binary = _split(body, header_length)
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput("the body must be a JSON object with 'inputs'")
    unknown = doc.keys() - {"id", "parameters", "inputs", "outputs"}
    if unknown:
        raise BadInput(f"unknown fields: {sorted(unknown)!r:.120}")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadInput("'id' must be a string")
    parameters = _parameters(doc.get("parameters"), "the request's 'parameters'")
    inputs = _inputs(doc.get("inputs"), binary)
    outputs = _outputs(doc.get("outputs"))
    request = InferRequest(model, version, inputs, outputs, request_id, parameters)
    return request, parameters.get("binary_data_output") is True


def encode_infer(
    response: InferResponse, requested: Sequence[RequestedOutput], binary_default: bool
) -> tuple[bytes, int | None]:
    """The REST answer body, and the length of its JSON part when binary data follows it."""
    binary_of = {output.name: output.binary for output in requested}
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in response.outputs:
        flag = binary_of.get(tensor.name)
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if binary_default if flag is None else flag:
            raw = tensor.raw()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = tensor.json_data()
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model, "model_version": response.version}
    if response.id is not None:
        doc["id"] = response.id
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise BadInput(
            f"{HEADER_LENGTH} {header_length!r:.40} must be a length within the body "
            f"({len(body)} bytes)"
        )
    return body[:length], body[length:]


def _parameters(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"{where} must be an object")
    return value


def _inputs(value: Any, binary: bytes) -> list[InputTensor]:
    if not isinstance(value, list) or not value:
        raise BadInput("'inputs' must be a non-empty array of tensors")
    tensors: list[InputTensor] = []
    offset = 0
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise BadInput(f"inputs[{index}] must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise BadInput(f"inputs[{index}] needs a 'name'")
        datatype, shape = check_shape(name, item.get("datatype"), item.get("shape"))
        parameters = _parameters(item.get("parameters"), f"input {name!r}: 'parameters'")
        size = parameters.get("binary_data_size")
        if size is None:
            if "data" not in item:
                raise BadInput(f"input {name!r} has neither 'data' nor a binary_data_size")
            tensors.append(from_json_data(name, datatype, shape, item["data"]))
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadInput(f"input {name!r}: binary_data_size must be an integer >= 0")
        if offset + size > len(binary):
            raise BadInput(
                f"input {name!r}: binary_data_size {size} runs past the body's binary data "
                f"({len(binary) - offset} bytes left)"
            )
        tensors.append(from_raw(name, datatype, shape, binary[offset : offset + size]))
        offset += size
    if offset != len(binary):
        raise BadInput(f"the body has {len(binary) - offset} bytes of binary data no input claims")
    return tensors


def _outputs(value: Any) -> list[RequestedOutput]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadInput("'outputs' must be an array of {\"name\": ...}")
    outputs: list[RequestedOutput] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadInput(f"outputs[{index}] must be an object with a 'name'")
        parameters = _parameters(item.get("parameters"), f"outputs[{index}].parameters")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise BadInput(f"outputs[{index}]: binary_data must be true or false")
        k = parameters.get("classification")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int)):
            raise BadInput(f"outputs[{index}]: classification must be an integer")
        outputs.append(RequestedOutput(item["name"], binary, k))
    return outputs
