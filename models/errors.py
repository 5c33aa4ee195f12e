"""Error types raised by the models package.

Each error builds its message from domain arguments, so callers can catch the type and still
log something a reader understands. `retriable` tells a caller whether the same request might
succeed later (none of these do: they are configuration or programming errors).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "InvalidInputError",
    "InvalidRunnerConfigError",
    "MissingModelFileError",
    "MissingTensorError",
    "ModelError",
    "ModelFolderError",
    "RunnerClosedError",
    "ShapeNotCompiledError",
    "TensorShapeError",
    "UnknownModelError",
    "UnsupportedModelError",
    "UnsupportedQuantizationError",
    "WeightsError",
]


class ModelError(Exception):
    """Root of every error raised by `models`."""

    retriable: bool = False


class UnknownModelError(ModelError, LookupError):
    """A model name that the registry does not know."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        super().__init__(f"unknown model {name!r}; known models: {', '.join(self.known)}")


class InvalidInputError(ModelError, ValueError):
    """One input of a request that the model cannot take (wrong shape, type or value)."""

    def __init__(self, index: int, reason: str) -> None:
        self.index = index
        self.reason = reason
        super().__init__(f"inputs[{index}]: {reason}")


class InvalidRunnerConfigError(ModelError, ValueError):
    """A RunnerConfig that cannot be served (bad buckets or dtype)."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"invalid runner config {field}={value!r}: {reason}")


class ModelFolderError(ModelError, ValueError):
    """A model folder whose files kinfer cannot read; the message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __str__(self) -> str:  # FileNotFoundError, a base of one subclass, formats differently
        return str(self.args[0])


class MissingModelFileError(ModelFolderError, FileNotFoundError):
    """A file the model needs is absent from its folder."""

    def __init__(self, path: str | Path, hint: str = "") -> None:
        super().__init__(path, f"missing{f' ({hint})' if hint else ''}")


class UnsupportedModelError(ModelFolderError):
    """A model folder that describes something kinfer does not serve (an activation, a module)."""


class UnsupportedQuantizationError(ModelError, ValueError):
    """A quantisation that no code implements (a manifest's or a caller's)."""

    def __init__(self, quantization: str, supported: Iterable[str]) -> None:
        self.quantization = quantization
        self.supported = tuple(supported)
        super().__init__(
            f"unsupported quantization {quantization!r}; supported: {', '.join(self.supported)}"
        )


class WeightsError(ModelError):
    """A weights file that does not fit the model."""


class MissingTensorError(WeightsError, KeyError):
    """A tensor the model needs is absent from the weights file."""

    def __init__(self, tensor: str, path: str) -> None:
        self.tensor = tensor
        self.path = path
        super().__init__(f"tensor {tensor!r} is missing from {path}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class TensorShapeError(WeightsError, ValueError):
    """A tensor whose shape differs from what the model expects."""

    def __init__(
        self, tensor: str, path: str, expected: tuple[int, ...], actual: tuple[int, ...]
    ) -> None:
        self.tensor = tensor
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"tensor {tensor!r} in {path} has shape {actual}, the model expects {expected}"
        )


class ShapeNotCompiledError(ModelError, RuntimeError):
    """A padded shape that was not compiled at warm-up: compiling it now would stall serving."""

    def __init__(self, batch: int, seq: int, compiled: Iterable[tuple[int, int]]) -> None:
        self.batch = batch
        self.seq = seq
        self.compiled = tuple(sorted(compiled))
        super().__init__(
            f"shape (batch={batch}, seq={seq}) was not compiled at warm-up "
            f"(compiled: {list(self.compiled)}); refusing to compile at request time"
        )


class RunnerClosedError(ModelError, RuntimeError):
    """A call on a runner after close()."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"model runner {name!r} is closed")
