"""How output rows are written on the wire: JSON numbers, or base64 of little-endian float32.

A request picks one with its ``encoding`` field:

``"float"`` (the default)
    each row is a JSON array of numbers, ``[0.0123, -0.0456, ...]``.
``"base64"``
    each row is one JSON string: the standard base64 (RFC 4648 alphabet, ``=`` padding, no line
    breaks) of the row's float32 values as little-endian bytes, as OpenAI's and TEI's embedding
    APIs return them (``encoding_format: "base64"``). A 384-float row is 2 048 characters.

Encoding is vectorised: the whole answer is base64-encoded in one ``binascii`` call and its JSON
array is laid out in numpy, with no Python work per row or per float. Each row is first padded
with zero bytes to a multiple of 3, so that rows encode independently of each other; the one or
two characters that the zero bytes produced are then overwritten with ``=``, which is exactly
standard base64. (A 384-float row is 1 536 bytes, a multiple of 3: no padding.)

:func:`decode_rows` turns either form of an answer back into a float32 matrix, for clients and
tests.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

Encoding = Literal["float", "base64"]

#: The accepted values of a request's ``encoding``, the default first.
ENCODINGS: Final[tuple[Encoding, ...]] = ("float", "base64")
DEFAULT_ENCODING: Final[Encoding] = "float"

_FLOAT32_LE = np.dtype("<f4")
_QUOTE, _COMMA, _PAD = ord('"'), ord(","), ord("=")
_OPEN, _CLOSE, _ZERO_DIGIT = ord("["), ord("]"), ord("A")


def float32_rows(outputs: Any) -> npt.NDArray[np.float32]:
    """``outputs`` as a C-contiguous, native float32 array (no copy when it already is one).

    orjson serialises such an array directly; it refuses non-contiguous ones.
    """
    return np.ascontiguousarray(outputs, dtype=np.float32)


def base64_rows_json(rows: npt.NDArray[np.float32]) -> bytes:
    """The JSON array ``["<row 0>", "<row 1>", ...]`` of the base64 of each row of ``rows``.

    ``rows`` is a 2-D (n, dim) array; any n (0 included) and any dim.
    """
    if rows.ndim and not len(rows):
        return b"[]"
    if rows.ndim != 2:
        raise ValueError(f"base64 outputs need a 2-D (rows, dim) array, got shape {rows.shape}")
    n, dim = rows.shape
    row_bytes = dim * 4
    pad = -row_bytes % 3  # zero bytes added to each row; as many '=' in its text
    data = np.ascontiguousarray(rows, dtype=_FLOAT32_LE).view(np.uint8).reshape(n, row_bytes)
    if pad:
        padded = np.zeros((n, row_bytes + pad), np.uint8)
        padded[:, :row_bytes] = data
        data = padded
    chars = (row_bytes + pad) // 3 * 4
    text = np.frombuffer(binascii.b2a_base64(data.data, newline=False), np.uint8).reshape(n, chars)
    # '[' then, per row, '"' text '"' ',' in fixed columns; the last ',' becomes ']'
    width = chars + 3
    out = np.empty(1 + n * width, np.uint8)
    out[0] = _OPEN
    grid = out[1:].reshape(n, width)
    grid[:, 0] = _QUOTE
    grid[:, 1 : chars + 1] = text
    if pad:
        grid[:, chars + 1 - pad : chars + 1] = _PAD
    grid[:, chars + 1] = _QUOTE
    grid[:, chars + 2] = _COMMA
    out[-1] = _CLOSE
    return out.tobytes()


def decode_rows(answer: Mapping[str, Any]) -> npt.NDArray[np.float32]:
    """The outputs of a parsed result answer as an (n, dim) float32 array, in either encoding.

    Raises ValueError for an error answer, an unknown encoding or malformed base64 rows. An
    answer with no rows gives a (0, 0) array.
    """
    if "error" in answer:
        error = answer["error"]
        code, message = error.get("code"), error.get("message")
        raise ValueError(f"an error answer has no outputs: {code}: {message}")
    encoding = answer.get("encoding", DEFAULT_ENCODING)
    outputs = answer["outputs"]
    if not outputs:
        return np.zeros((0, 0), np.float32)
    if encoding == "float":
        return np.asarray(outputs, dtype=np.float32)
    if encoding != "base64":
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")
    return _decode_base64_rows(outputs)


def _decode_base64_rows(rows: list[str]) -> npt.NDArray[np.float32]:
    lengths = set(map(len, rows))
    if len(lengths) != 1:
        raise ValueError("base64 rows of one answer must all have the same length")
    chars = lengths.pop()
    if chars % 4:
        raise ValueError(f"a base64 row has {chars} characters, not a multiple of 4")
    text = np.frombuffer("".join(rows).encode("ascii"), np.uint8).reshape(len(rows), chars).copy()
    padding = text[:, -2:] == _PAD
    if not (padding == padding[0]).all():
        raise ValueError("base64 rows of one answer must all have the same padding")
    pad = int(padding[0, 1]) + int(padding[0, 0] and padding[0, 1]) if chars else 0
    row_bytes = chars // 4 * 3 - pad
    if row_bytes % 4:
        raise ValueError(f"a base64 row holds {row_bytes} bytes, not whole float32 values")
    if pad:
        # zero bits in place of the padding: the rows then decode as one string ("=A" and any
        # other misplaced '=' are still refused by the strict decoder)
        text[:, chars - pad :] = _ZERO_DIGIT
    data = binascii.a2b_base64(text.tobytes(), strict_mode=True)
    matrix = np.frombuffer(data, np.uint8).reshape(len(rows), row_bytes + pad)[:, :row_bytes]
    return np.ascontiguousarray(matrix).view(_FLOAT32_LE).astype(np.float32, copy=False)
