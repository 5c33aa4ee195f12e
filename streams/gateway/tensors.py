"""Open Inference Protocol tensors: datatypes, shapes, and their JSON, typed and raw layouts.

A tensor has a name, a datatype (``FP32``, ``INT64``, ``BYTES``...) and a shape; its elements
travel flattened in row-major order, as

- JSON ``data`` (REST): a flat or nested array of numbers, booleans or (BYTES) strings;
- raw bytes (REST's binary tensor extension, gRPC's ``raw_*_contents``): little-endian
  elements, and for BYTES each element a 4-byte little-endian length and then its bytes;
- typed contents (gRPC's ``InferTensorContents``): ``fp32_contents``, ``int64_contents``...

Numeric tensors are held as flat numpy arrays, BYTES tensors as lists of ``bytes``. Every
function here raises `BadInput` naming the tensor and what is wrong, never anything else.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streams.gateway.errors import BadInput

__all__ = [
    "BYTES",
    "DATATYPES",
    "InputTensor",
    "OutputTensor",
    "RequestedOutput",
    "TensorSpec",
    "check_shape",
    "from_json_data",
    "from_raw",
    "pack_bytes",
    "unpack_bytes",
]

BYTES: Final = "BYTES"
#: Each numeric datatype of the protocol and its little-endian numpy dtype.
DATATYPES: Final[Mapping[str, np.dtype[Any]]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_KNOWN = (*DATATYPES, BYTES)
_LENGTH = struct.Struct("<I")

Elements = npt.NDArray[Any] | list[bytes]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model's input or output as its metadata declares it (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        """The metadata's ``{"name", "datatype", "shape"}``."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class InputTensor:
    """A request's input: flat elements (numpy for numbers, ``bytes`` for BYTES) and a shape."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Elements


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """An answer's output: flat elements and a shape."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Elements

    def raw(self) -> bytes:
        """The elements as raw bytes (little-endian; BYTES length-prefixed)."""
        if self.datatype == BYTES:
            return pack_bytes(self.data)
        array = np.asarray(self.data, dtype=DATATYPES[self.datatype])
        return array.tobytes()

    def json_data(self) -> Any:
        """The elements for JSON ``data``: a flat array (numpy, for orjson) or strings."""
        if self.datatype == BYTES:
            return [item.decode("utf-8", "replace") for item in self.data]
        return np.ascontiguousarray(self.data, dtype=DATATYPES[self.datatype])


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An entry of the request's ``outputs``.

    ``binary``: REST only, the binary tensor extension's ``binary_data`` (None: the request's
    ``binary_data_output`` decides). ``classification``: the classification extension's
    ``classification`` count, the k most likely classes as ``"<probability>:<label>"``.
    """

    name: str
    binary: bool | None = None
    classification: int | None = None


def check_shape(name: str, datatype: Any, shape: Any) -> tuple[str, tuple[int, ...]]:
    """A known datatype and a shape of non-negative integers, or BadInput."""
    if not isinstance(datatype, str) or datatype not in _KNOWN:
        known = ", ".join(_KNOWN)
        raise BadInput(f"input {name!r}: datatype {datatype!r:.40} is not one of {known}")
    if not isinstance(shape, Sequence) or isinstance(shape, str | bytes):
        raise BadInput(f"input {name!r}: 'shape' must be an array of integers")
    dims = tuple(shape)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in dims):
        raise BadInput(f"input {name!r}: shape {list(dims)!r:.80} must hold integers >= 0")
    return datatype, dims


def element_count(shape: Sequence[int]) -> int:
    """How many elements a tensor of ``shape`` has."""
    return math.prod(shape)


def from_json_data(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> InputTensor:
    """An input from JSON ``data`` (flat or nested, row-major)."""
    expected = element_count(shape)
    if not isinstance(data, list):
        raise BadInput(f"input {name!r}: 'data' must be an array")
    flat = list(_flatten(data)) if any(isinstance(item, list) for item in data) else data
    if len(flat) != expected:
        raise BadInput(
            f"input {name!r}: shape {list(shape)} has {expected} elements, 'data' has {len(flat)}"
        )
    if datatype == BYTES:
        if not all(isinstance(item, str) for item in flat):
            raise BadInput(f"input {name!r}: BYTES 'data' must hold strings")
        return InputTensor(name, datatype, shape, [item.encode("utf-8") for item in flat])
    return InputTensor(name, datatype, shape, _numbers(name, datatype, flat))


def from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> InputTensor:
    """An input from raw bytes (binary tensor extension, gRPC ``raw_input_contents``)."""
    expected = element_count(shape)
    if datatype == BYTES:
        return InputTensor(name, datatype, shape, unpack_bytes(name, raw, expected))
    dtype = DATATYPES[datatype]
    if len(raw) != expected * dtype.itemsize:
        raise BadInput(
            f"input {name!r}: {datatype} shape {list(shape)} needs "
            f"{expected * dtype.itemsize} bytes, got {len(raw)}"
        )
    return InputTensor(name, datatype, shape, np.frombuffer(raw, dtype=dtype))


def from_typed(
    name: str, datatype: str, shape: tuple[int, ...], values: Sequence[Any]
) -> InputTensor:
    """An input from gRPC typed contents (the repeated field that matches its datatype)."""
    expected = element_count(shape)
    if len(values) != expected:
        raise BadInput(
            f"input {name!r}: shape {list(shape)} has {expected} elements, "
            f"its contents have {len(values)}"
        )
    if datatype == BYTES:
        return InputTensor(name, datatype, shape, [bytes(item) for item in values])
    return InputTensor(name, datatype, shape, _numbers(name, datatype, values, typed=True))


def unpack_bytes(name: str, raw: bytes, count: int) -> list[bytes]:
    """``count`` BYTES elements, each a 4-byte little-endian length and then its bytes."""
    items: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadInput(f"input {name!r}: BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadInput(f"input {name!r}: BYTES element {len(items)} runs past the data")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise BadInput(f"input {name!r}: expected {count} BYTES elements, got {len(items)}")
    return items


def pack_bytes(items: Iterable[bytes]) -> bytes:
    """BYTES elements as raw data: each a 4-byte little-endian length and then its bytes."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def _flatten(data: list[Any]) -> Iterable[Any]:
    for item in data:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def _numbers(
    name: str, datatype: str, values: Sequence[Any], *, typed: bool = False
) -> npt.NDArray[Any]:
    """``values`` as a flat array of ``datatype``; ``typed``: already of the right Python type
    (gRPC's typed contents), so only the range is checked."""
    dtype = DATATYPES[datatype]
    if datatype == "BOOL":
        if not typed and not all(type(v) is bool for v in values):
            raise BadInput(f"input {name!r}: BOOL data must hold booleans")
        return np.asarray(values, dtype=dtype)
    if dtype.kind == "f":
        if not typed and not all(type(v) in (int, float) for v in values):
            raise BadInput(f"input {name!r}: {datatype} data must hold numbers")
        wide = np.asarray(values, dtype=np.float64)
        with np.errstate(over="ignore"):
            narrow = wide.astype(dtype)
        if not np.array_equal(np.isfinite(narrow), np.isfinite(wide)):
            raise BadInput(f"input {name!r}: a value is out of the range of {datatype}")
        return narrow
    if not typed and not all(type(v) is int for v in values):
        raise BadInput(f"input {name!r}: {datatype} data must hold integers")
    limits = np.iinfo(dtype)
    if values and (min(values) < limits.min or max(values) > limits.max):
        raise BadInput(f"input {name!r}: a value is out of the range of {datatype}")
    return np.asarray(values, dtype=dtype)
