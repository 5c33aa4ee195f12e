"""What each kind of model looks like as Open Inference Protocol tensors, both ways.

A `Signature` declares a model's input and output tensors (its metadata), turns a request's
input tensors into the ``inputs`` of a Kafka request (`streams.contract`), and a worker's
answer back into output tensors:

- sentence-embedding: input ``text`` BYTES ``[-1]`` (UTF-8 texts; ``[n, 1]`` too); output
  ``embedding`` FP32 ``[-1, dim]``.
- image-classification: input ``image`` FP32 ``[-1, 8, 8]`` (any numeric type; ``[n, 64]``
  too); outputs ``label`` INT64 ``[-1]`` and ``probabilities`` FP32 ``[-1, classes]``.

``probabilities`` also honours the classification extension (``"classification": k`` on the
requested output): a BYTES ``[n, k]`` tensor of ``"<probability>:<label>"``, most likely first,
computed here from the probabilities the worker returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streams.gateway.errors import BadInput, ModelFailed
from streams.gateway.tensors import (
    BYTES,
    DATATYPES,
    InputTensor,
    OutputTensor,
    RequestedOutput,
    TensorSpec,
)
from streams.wire_encoding import Encoding, decode_rows

__all__ = ["ImageClassification", "Signature", "TextEmbedding", "signature_for"]


class Signature(Protocol):
    """A model's tensors, and the mapping between them and the Kafka contract."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The input tensors, as the model metadata lists them."""
        ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The output tensors, as the model metadata lists them."""
        ...

    @property
    def encoding(self) -> Encoding:
        """The ``encoding`` the gateway asks the worker for."""
        ...

    def kafka_inputs(self, tensors: Sequence[InputTensor]) -> list[Any]:
        """The Kafka request's ``inputs``, or BadInput."""
        ...

    def check_outputs(self, requested: Sequence[RequestedOutput]) -> None:
        """Refuse (BadInput) an output this model does not have or an option it cannot honour."""
        ...

    def answer_outputs(
        self, answer: Mapping[str, Any], requested: Sequence[RequestedOutput]
    ) -> list[OutputTensor]:
        """The requested outputs (all, when none is requested) of a worker's result answer."""
        ...


def signature_for(task: str, input_type: str, output_type: str, **schema: Any) -> Signature | None:
    """The signature of a manifest's task and schema; None for a kind the gateway cannot map."""
    if (task, input_type, output_type) == ("sentence-embedding", "text", "embedding"):
        return TextEmbedding(dim=schema.get("dim") or -1)
    if (task, input_type, output_type) == ("image-classification", "image", "classification"):
        shape = tuple(schema.get("shape") or (8, 8))
        return ImageClassification(image_shape=shape, classes=schema.get("classes") or -1)
    return None


def _one_input(spec: TensorSpec, tensors: Sequence[InputTensor]) -> InputTensor:
    if len(tensors) != 1 or tensors[0].name != spec.name:
        names = [tensor.name for tensor in tensors]
        raise BadInput(f"this model takes exactly one input, {spec.name!r}; got {names!r:.200}")
    return tensors[0]


def _check_requested(
    outputs: Sequence[TensorSpec], requested: Sequence[RequestedOutput], classifiable: str | None
) -> None:
    names = [spec.name for spec in outputs]
    seen: set[str] = set()
    for output in requested:
        if output.name not in names:
            raise BadInput(f"this model has no output {output.name!r:.80}; its outputs: {names}")
        if output.name in seen:
            raise BadInput(f"output {output.name!r} is requested twice")
        seen.add(output.name)
        if output.classification is not None and output.name != classifiable:
            where = f"only on {classifiable!r}" if classifiable else "not on this model"
            raise BadInput(f"'classification' is supported {where}, not on {output.name!r}")


def _selected(
    produced: Mapping[str, OutputTensor], requested: Sequence[RequestedOutput]
) -> list[OutputTensor]:
    if not requested:
        return list(produced.values())
    return [produced[output.name] for output in requested]


@dataclass(frozen=True)
class TextEmbedding:
    """Sentence encoders: texts in, one embedding row per text out."""

    dim: int
    encoding: Encoding = "base64"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("text", BYTES, (-1,)),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("embedding", "FP32", (-1, self.dim)),)

    def kafka_inputs(self, tensors: Sequence[InputTensor]) -> list[Any]:
        tensor = _one_input(self.inputs[0], tensors)
        if tensor.datatype != BYTES:
            raise BadInput(f"input 'text' must be BYTES (UTF-8 texts), got {tensor.datatype}")
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise BadInput(f"input 'text' must have shape [n] or [n, 1], got {list(tensor.shape)}")
        texts: list[str] = []
        for index, item in enumerate(tensor.data):
            try:
                texts.append(bytes(item).decode("utf-8"))
            except UnicodeDecodeError:
                raise BadInput(f"input 'text' element {index} is not valid UTF-8") from None
        if not texts:
            raise BadInput("input 'text' holds no texts")
        return texts

    def check_outputs(self, requested: Sequence[RequestedOutput]) -> None:
        _check_requested(self.outputs, requested, classifiable=None)

    def answer_outputs(
        self, answer: Mapping[str, Any], requested: Sequence[RequestedOutput]
    ) -> list[OutputTensor]:
        try:
            rows = decode_rows(answer)
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFailed(f"the worker's answer has no usable embeddings: {exc}") from None
        embedding = OutputTensor("embedding", "FP32", tuple(rows.shape), rows.reshape(-1))
        return _selected({"embedding": embedding}, requested)


@dataclass(frozen=True)
class ImageClassification:
    """Image classifiers: images in, a label and the class probabilities per image out."""

    image_shape: tuple[int, ...]
    classes: int
    encoding: Encoding = "float"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("image", "FP32", (-1, *self.image_shape)),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (
            TensorSpec("label", "INT64", (-1,)),
            TensorSpec("probabilities", "FP32", (-1, self.classes)),
        )

    def kafka_inputs(self, tensors: Sequence[InputTensor]) -> list[Any]:
        tensor = _one_input(self.inputs[0], tensors)
        if tensor.datatype not in DATATYPES or tensor.datatype == "BOOL":
            raise BadInput(f"input 'image' must be numeric (FP32, INT64...), got {tensor.datatype}")
        pixels = int(np.prod(self.image_shape))
        shape = list(tensor.shape)
        if shape[1:] not in (list(self.image_shape), [pixels]):
            accepted = f"[n, {', '.join(map(str, self.image_shape))}] or [n, {pixels}]"
            raise BadInput(f"input 'image' must have shape {accepted}, got {shape}")
        if not shape[0]:
            raise BadInput("input 'image' holds no images")
        images = np.asarray(tensor.data, dtype=np.float64).reshape(shape[0], *self.image_shape)
        rows: list[Any] = images.tolist()
        return rows

    def check_outputs(self, requested: Sequence[RequestedOutput]) -> None:
        _check_requested(self.outputs, requested, classifiable="probabilities")
        for output in requested:
            k = output.classification
            if k is not None and not 1 <= k <= self.classes:
                raise BadInput(f"'classification' must be from 1 to {self.classes}, got {k}")

    def answer_outputs(
        self, answer: Mapping[str, Any], requested: Sequence[RequestedOutput]
    ) -> list[OutputTensor]:
        try:
            rows = answer["outputs"]
            labels = np.asarray([row["label"] for row in rows], dtype=np.int64)
            probabilities = np.asarray([row["probabilities"] for row in rows], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFailed(f"the worker's answer has no usable classes: {exc!r}") from None
        if probabilities.ndim != 2 or len(probabilities) != len(labels):
            raise ModelFailed(f"the worker's probabilities have shape {probabilities.shape}")
        produced = {
            "label": OutputTensor("label", "INT64", labels.shape, labels),
            "probabilities": OutputTensor(
                "probabilities", "FP32", probabilities.shape, probabilities.reshape(-1)
            ),
        }
        for output in requested:
            if output.classification is not None:
                produced[output.name] = _classification(probabilities, output.classification)
        return _selected(produced, requested)


def _classification(probabilities: np.ndarray, k: int) -> OutputTensor:
    """The classification extension: the k most likely classes as ``b"<p>:<label>"``."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(probabilities, order, axis=1)
    items = [
        f"{value:.6g}:{label}".encode()
        for row_values, row_labels in zip(values.tolist(), order.tolist(), strict=True)
        for value, label in zip(row_values, row_labels, strict=True)
    ]
    return OutputTensor("probabilities", BYTES, (len(probabilities), k), items)
