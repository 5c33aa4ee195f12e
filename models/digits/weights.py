"""Save and load the digits CNN as safetensors: one tensor per NNX parameter, by its path.

A tensor is named by its parameter's path in the module (``conv1.kernel``, ``linear2.bias``)
and keeps Flax's layout, so saving and loading are exact inverses. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from models.digits.model import DigitsCNN
from models.errors import MissingTensorError, TensorShapeError

__all__ = [
    "METRICS_FILE",
    "WEIGHTS_DIR",
    "WEIGHTS_FILE",
    "load_model",
    "load_weights",
    "save_weights",
    "sha256_file",
    "tensor_map",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""The committed weights' folder."""
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
# one key: safetensors writes its metadata from a hash map, whose order varies per process
_METADATA = {"format": "kinfer-digits-cnn/flax"}


def tensor_map(model: DigitsCNN) -> Iterator[tuple[str, nnx.Param[jax.Array]]]:
    """Yield (tensor name, NNX parameter) for every parameter of `model`, in path order."""
    for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        yield ".".join(str(part) for part in path), param


def save_weights(model: DigitsCNN, path: str | Path) -> str:
    """Write every parameter of `model` to a safetensors file; returns its sha256 (hex).

    The file is written next to `path` and renamed into place, so a reader never sees half of
    it. Equal parameters give byte-identical files.
    """
    path = Path(path)
    tensors = {name: np.asarray(param[...], dtype=np.float32) for name, param in tensor_map(model)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=_METADATA)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; weights are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return sha256_file(path)


def load_weights(model: DigitsCNN, path: str | Path) -> None:
    """Copy every tensor of a safetensors file into `model`, in place.

    Raises:
        MissingTensorError: a parameter of the model has no tensor in the file.
        TensorShapeError: a tensor's shape differs from its parameter's.
    """
    tensors = load_file(str(path))
    state = nnx.state(model, nnx.Param)
    for path_parts, param in nnx.to_flat_state(state):
        name = ".".join(str(part) for part in path_parts)
        if name not in tensors:
            raise MissingTensorError(name, str(path))
        array = tensors[name]
        current = param.get_value()  # an array, or a ShapeDtypeStruct in an abstract model
        expected = tuple(current.shape)
        if array.shape != expected:
            raise TensorShapeError(name, str(path), expected, tuple(array.shape))
        param.set_value(jnp.asarray(array, dtype=current.dtype))
    nnx.update(model, state)


def load_model(path: str | Path) -> DigitsCNN:
    """A DigitsCNN with the weights of a safetensors file.

    The module is built abstractly (`nnx.eval_shape`) and filled from the file, so no random
    initialiser runs: eager random init compiles one kernel per parameter shape, several
    seconds on 2 CPU cores, for values that would be overwritten.

    Raises:
        MissingTensorError, TensorShapeError: as `load_weights`.
    """
    model = nnx.eval_shape(lambda: DigitsCNN(rngs=nnx.Rngs(0)))
    load_weights(model, path)
    return model


def sha256_file(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
