"""Answers as the SDK hands them over: outputs decoded, errors raised."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.errors import KinferError
from streams.sdk.errors import error_from_answer
from streams.wire_encoding import decode_rows


def outputs_of(answer: Mapping[str, Any], count: int) -> list[Any]:
    """The outputs of a parsed answer to ``count`` inputs, one per input.

    Raises the answer's `ErrorAnswer` subclass for an error answer, KinferError for a result
    with the wrong number of outputs. Rows of a base64 answer come back decoded, each a float32
    numpy array (no Python work per float); those of a float answer as the JSON gave them.
    """
    error = error_from_answer(answer)
    if error is not None:
        raise error
    outputs = answer.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != count:
        got = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
        raise KinferError(f"answer {answer.get('id')!r} has {got} outputs for {count} inputs")
    if answer.get("encoding") == "base64":
        try:
            return list(decode_rows(answer))
        except ValueError as exc:
            raise KinferError(f"answer {answer.get('id')!r} has malformed rows: {exc}") from None
    return outputs
