"""What each kind of model accepts and answers: input validation and answer encoding.

A request is decoded without knowing its model (`streams.contract`); once it is routed to a
served version, that version's input kind checks ``inputs`` and turns them into what its
batcher takes, and its output kind writes the answer:

- **text** (sentence encoders): a list of strings, each at most ``MAX_INPUT_CHARS`` long. The
  answer's ``outputs`` are embedding rows, as JSON numbers or base64 (``"encoding"``).
- **image** (the digits classifier): a list of 8x8 images (8 rows of 8 numbers, or 64
  numbers) in scikit-learn's 0-16 scale. The answer's ``outputs`` are one
  ``{"label": int, "probabilities": [floats]}`` per image, with ``"top_k": [[label, p], ...]``
  when the request asks ``"top_k": k``.

A request that does not fit its model (an image for a text model, ``top_k`` for an encoder,
``"encoding": "base64"`` for a classifier) is ``INVALID_REQUEST``, naming the input's index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import orjson

from streams import contract
from streams.contract import Limits, Request
from streams.errors import InputTooLarge, InvalidRequest
from streams.flow import estimate_tokens
from streams.wire_encoding import DEFAULT_ENCODING

__all__ = [
    "ClassificationOutputs",
    "EmbeddingOutputs",
    "ImageInputs",
    "InputKind",
    "OutputKind",
    "TextInputs",
]


class InputKind(Protocol):
    """Checks a routed request's inputs and prices them for the in-flight limit."""

    kind: str

    def validate(self, inputs: Sequence[Any], limits: Limits) -> Any:
        """What the model's batcher takes (a sequence), or raise the RequestError for it."""
        ...

    def tokens(self, payload: Sequence[Any]) -> int:
        """Estimated tokens of the validated inputs (the in-flight limit's second measure)."""
        ...


class OutputKind(Protocol):
    """Checks the request's answer options and writes the answer."""

    kind: str

    def check(self, request: Request) -> None:
        """Raise InvalidRequest for an option this model cannot honour."""
        ...

    def encode(
        self, request: Request, version: str, rows: np.ndarray, timing: Mapping[str, float]
    ) -> bytes:
        """The answer record for ``rows`` (one per input)."""
        ...


class TextInputs:
    """Strings, each at most ``limits.max_input_chars`` characters."""

    kind = "text"

    def __init__(self, max_tokens: int) -> None:
        self._max_tokens = max_tokens

    def validate(self, inputs: Sequence[Any], limits: Limits) -> Sequence[str]:
        # The happy path in C, no Python work per input: join() refuses anything but strings,
        # and inputs that are short all together are each short. The loop only names the
        # first bad one.
        try:
            total_chars = len("".join(inputs))
        except TypeError:
            total_chars = -1  # an input is not a string
        limit = limits.max_input_chars
        if total_chars < 0 or (total_chars > limit and max(map(len, inputs)) > limit):
            self._raise_first_bad_input(inputs, limit)
        return inputs

    def tokens(self, payload: Sequence[Any]) -> int:
        return estimate_tokens(payload, self._max_tokens)

    def _raise_first_bad_input(self, inputs: Sequence[Any], limit: int) -> None:
        for index, text in enumerate(inputs):
            if not isinstance(text, str):
                raise InvalidRequest(
                    f"inputs[{index}] must be a string (this model takes text), got "
                    f"{contract.json_type(text)}"
                )
            if len(text) > limit:
                raise InputTooLarge(
                    f"inputs[{index}] length in characters", len(text), limit, "MAX_INPUT_CHARS"
                )


class ImageInputs:
    """8x8 images in 0-16, as the digits classifier takes them."""

    kind = "image"

    def validate(self, inputs: Sequence[Any], limits: Limits) -> np.ndarray:
        from models.digits.inputs import validate_images
        from models.errors import InvalidInputError

        try:
            return validate_images(inputs)
        except InvalidInputError as exc:
            raise InvalidRequest(str(exc)) from None

    def tokens(self, payload: Sequence[Any]) -> int:
        return len(payload)


class EmbeddingOutputs:
    """Embedding rows, as JSON numbers or base64 (``"encoding"``)."""

    kind = "embedding"

    def check(self, request: Request) -> None:
        if request.top_k is not None:
            raise InvalidRequest(
                f"'top_k' applies to classifiers; {request.model!r} answers embeddings"
            )

    def encode(
        self, request: Request, version: str, rows: np.ndarray, timing: Mapping[str, float]
    ) -> bytes:
        return contract.encode_result(request, version, rows, timing)


class ClassificationOutputs:
    """One ``{"label", "probabilities"[, "top_k"]}`` per input, from (n, classes) rows."""

    kind = "classification"

    def __init__(self, classes: int) -> None:
        self.classes = classes

    def check(self, request: Request) -> None:
        if request.encoding != DEFAULT_ENCODING:
            raise InvalidRequest(
                f"'encoding' {request.encoding!r} applies to embeddings; {request.model!r} "
                "answers labels and probabilities as JSON"
            )
        if request.top_k is not None and not 1 <= request.top_k <= self.classes:
            raise InvalidRequest(
                f"'top_k' must be from 1 to {self.classes} for {request.model!r}, "
                f"got {request.top_k}"
            )

    def encode(
        self, request: Request, version: str, rows: np.ndarray, timing: Mapping[str, float]
    ) -> bytes:
        from models.digits.classifier import output_rows

        outputs = output_rows(rows, request.top_k)
        return orjson.dumps(
            {
                "id": request.id,
                "model": request.model,
                "version": version,
                "outputs": outputs,
                "timing": timing,
            }
        )
