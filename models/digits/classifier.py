"""Serve the digits CNN: weights from a folder, a forward compiled per batch bucket, top-k.

`DigitsClassifier.warm_up()` compiles one executable per batch bucket (1, 8, 64 by default)
ahead of time; `predict_proba` pads rows up to buckets (`models.bucketing.split_batch`) and
only calls those executables, so nothing compiles after warm-up. Before warm-up a bucket is
compiled on first use, which keeps tests and scripts cheap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from models.bucketing import split_batch
from models.digits.model import IMAGE_SIZE, NUM_CLASSES
from models.digits.weights import WEIGHTS_DIR, WEIGHTS_FILE, load_model, sha256_file
from models.errors import MissingModelFileError

__all__ = [
    "BATCH_BUCKETS",
    "CALL_COST_ROWS",
    "MODEL_NAME",
    "DigitsClassifier",
    "output_rows",
    "top_k",
]

MODEL_NAME = "digits"
BATCH_BUCKETS = (1, 8, 64)
CALL_COST_ROWS = 12.0
"""One forward call costs about as much as this many padded rows: on this project's 2-core CPU a
call is 0.32 ms at 1 row, 0.47 ms at 8 and 1.8 ms at 64 (0.3 ms a call, 0.024 ms a row)."""


class DigitsClassifier:
    """The digits CNN with weights from ``directory/model.safetensors``, ready to serve.

    Raises (on construction):
        MissingModelFileError: the folder has no model.safetensors (a FileNotFoundError).
        MissingTensorError, TensorShapeError: the file does not fit the model.
    """

    def __init__(
        self,
        directory: str | Path = WEIGHTS_DIR,
        *,
        batch_buckets: Sequence[int] = BATCH_BUCKETS,
        call_cost_rows: float = CALL_COST_ROWS,
    ) -> None:
        buckets = tuple(sorted(set(batch_buckets)))
        if not buckets or any(isinstance(b, bool) or int(b) != b or b < 1 for b in buckets):
            raise ValueError(f"batch_buckets must be positive integers, got {batch_buckets!r}")
        path = Path(directory) / WEIGHTS_FILE
        if not path.is_file():
            raise MissingModelFileError(path, "the digits CNN's weights")
        model = load_model(path)
        self.sha256 = sha256_file(path)
        self.batch_buckets: tuple[int, ...] = buckets
        self.call_cost_rows = call_cost_rows
        self._graphdef, state = nnx.split(model)
        self._params = jax.device_put(state)
        self._jitted = jax.jit(self._apply)
        self._compiled: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._warm = False

    name = MODEL_NAME
    num_classes = NUM_CLASSES

    @property
    def version(self) -> str:
        """``digits-cnn@<first 12 hex digits of the weights' sha256>``."""
        return f"digits-cnn@{self.sha256[:12]}"

    @property
    def compiled_buckets(self) -> frozenset[int]:
        """Batch sizes with a compiled executable."""
        return frozenset(self._compiled)

    @property
    def is_warm(self) -> bool:
        """True once warm_up() has compiled every bucket."""
        return self._warm

    def warm_up(self) -> float:
        """Compile every batch bucket; blocking, idempotent. Returns the seconds it took."""
        started = time.perf_counter()
        for bucket in self.batch_buckets:
            self._executable(bucket)
        self._warm = True
        return time.perf_counter() - started

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """float32 (n, 10) class probabilities of float32 (n, 8, 8) images in 0-16.

        Validate request inputs with `models.digits.inputs.validate_images` first; this only
        checks the array's shape.
        """
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"expected (n, {IMAGE_SIZE}, {IMAGE_SIZE}) images, got {images.shape}")
        out = np.empty((len(images), NUM_CLASSES), dtype=np.float32)
        pending = []
        start = 0
        for bucket, used in split_batch(len(images), self.batch_buckets, self.call_cost_rows):
            batch = images[start : start + used]
            if used < bucket:
                batch = np.concatenate(
                    [batch, np.zeros((bucket - used, IMAGE_SIZE, IMAGE_SIZE), np.float32)]
                )
            # Dispatch every call first: the device runs one while the host pads the next.
            pending.append((start, used, self._executable(bucket)(self._params, batch)))
            start += used
        for start, used, result in pending:
            out[start : start + used] = np.asarray(result)[:used]
        return out

    def _apply(self, params: nnx.State[Any, Any], images: jax.Array) -> jax.Array:
        probabilities: jax.Array = nnx.merge(self._graphdef, params).probabilities(images)
        return probabilities

    def _executable(self, bucket: int) -> Any:
        executable = self._compiled.get(bucket)
        if executable is not None:
            return executable
        with self._lock:
            if bucket not in self._compiled:
                example = np.zeros((bucket, IMAGE_SIZE, IMAGE_SIZE), np.float32)
                self._compiled[bucket] = self._jitted.lower(self._params, example).compile()
            return self._compiled[bucket]


def top_k(probabilities: np.ndarray, k: int) -> list[list[list[int | float]]]:
    """The `k` most likely labels of each row of (n, 10) probabilities, most likely first.

    Returns one list per row of ``[label, probability]`` pairs; equal probabilities keep the
    lower label first.

    Raises:
        ValueError: `k` is not an integer from 1 to the number of classes, or the array is
            not (n, classes).
    """
    return _top_k(probabilities, k)


def _top_k(probabilities: np.ndarray, k: int) -> list[list[list[int | float]]]:
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 2:
        raise ValueError(f"expected (n, classes) probabilities, got shape {probabilities.shape}")
    classes = probabilities.shape[1]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= classes:
        raise ValueError(f"top_k must be an integer from 1 to {classes}, got {k!r}")
    labels = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(probabilities, labels, axis=1)
    return [
        [[label, value] for label, value in zip(row_labels, row_values, strict=True)]
        for row_labels, row_values in zip(labels.tolist(), values.tolist(), strict=True)
    ]


def output_rows(probabilities: np.ndarray, top_k: int | None = None) -> list[dict[str, Any]]:
    """One answer row per image: ``{"label": int, "probabilities": [10 floats]}``.

    With ``top_k``, each row also has ``"top_k": [[label, probability], ...]``, most
    likely first. Probabilities are the model's float32 values as Python floats.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    labels = probabilities.argmax(axis=1).tolist()
    rows: list[dict[str, Any]] = [
        {"label": label, "probabilities": row}
        for label, row in zip(labels, probabilities.tolist(), strict=True)
    ]
    if top_k is not None:
        for row, best in zip(rows, _top_k(probabilities, top_k), strict=True):
            row["top_k"] = best
    return rows
