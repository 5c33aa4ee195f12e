"""A request's inputs -> the digits model's float32 (n, 8, 8) input, or a typed error.

An image is 8 rows of 8 numbers, or a flat list of 64, in scikit-learn's 0-16 scale (ints or
floats; bool is not a number). A well-formed request (every image the same layout, JSON
numbers) takes the vectorised path: one `np.asarray`, one pass over the values' types, and
array-wide shape, finiteness and range checks. Anything else takes the per-image path, which
accepts mixed layouts and numpy scalars, and names the first bad input's index and why.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.digits.model import IMAGE_SIZE, MAX_PIXEL
from models.errors import InvalidInputError

__all__ = ["validate_images"]

_PIXELS = IMAGE_SIZE * IMAGE_SIZE
_EXPECTED = f"expected {IMAGE_SIZE} rows of {IMAGE_SIZE} numbers or {_PIXELS} numbers"
_JSON_NUMBERS = frozenset({int, float})


def validate_images(inputs: Sequence[Any]) -> np.ndarray:
    """float32 (len(inputs), 8, 8) images from a request's inputs.

    Raises:
        InvalidInputError: an input is not 8 rows of 8 numbers nor 64 numbers, holds a
            non-number (a bool, a string, None...), NaN or infinity, or a value outside
            [0, 16]; the error's ``index`` and message name the first such input.
    """
    fast = _vectorised(inputs)
    if fast is not None:
        return fast
    images = np.empty((len(inputs), IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for index, image in enumerate(inputs):
        one = _vectorised([image])  # most images of a bad request are fine: keep them fast
        images[index] = one[0] if one is not None else _one_image(index, image)
    return images


def _vectorised(inputs: Sequence[Any]) -> np.ndarray | None:
    """The images when every input is valid and laid out alike; None sends to the slow path."""
    if isinstance(inputs, np.ndarray):
        if inputs.dtype.kind not in "iuf":
            return None
        array = inputs
    else:
        try:
            array = np.asarray(inputs, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            return None  # ragged, or a value float() refuses
    if array.ndim == 3 and array.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE):
        depth = 3
    elif array.ndim == 2 and array.shape[1] == _PIXELS:
        depth = 2
    else:
        return None
    # np.asarray turns True, "3" and None into numbers or NaN: only ints and floats count.
    if not isinstance(inputs, np.ndarray) and not _only_json_numbers(inputs, depth):
        return None
    if not (np.isfinite(array).all() and (array >= 0).all() and (array <= MAX_PIXEL).all()):
        return None
    return array.astype(np.float32, copy=False).reshape(len(array), IMAGE_SIZE, IMAGE_SIZE)


def _only_json_numbers(inputs: Sequence[Any], depth: int) -> bool:
    values: Any = inputs
    for _ in range(depth - 1):
        values = itertools.chain.from_iterable(values)
    return set(map(type, values)) <= _JSON_NUMBERS


def _one_image(index: int, image: Any) -> np.ndarray:
    """One input as float32 (8, 8), value by value, or the InvalidInputError saying why not."""
    if isinstance(image, np.ndarray):
        image = image.tolist()
    if not isinstance(image, list | tuple):
        raise InvalidInputError(index, f"{_EXPECTED}, got {_kind(image)}")
    nested = [isinstance(item, list | tuple | np.ndarray) for item in image]
    if len(image) == _PIXELS and not any(nested):
        return np.asarray(
            [_pixel(index, value, f"position {i}") for i, value in enumerate(image)],
            dtype=np.float32,
        ).reshape(IMAGE_SIZE, IMAGE_SIZE)
    if len(image) != IMAGE_SIZE or not all(nested):
        if all(nested):
            got = f"{len(image)} rows"
        elif not any(nested):
            got = f"{len(image)} numbers"
        else:
            got = f"a mix of {sum(nested)} rows and {len(image) - sum(nested)} other values"
        raise InvalidInputError(index, f"{_EXPECTED}, got {got}")
    rows = []
    for r, row in enumerate(image):
        row = list(row)
        if len(row) != IMAGE_SIZE:
            raise InvalidInputError(
                index, f"row {r} has {len(row)} values, expected {IMAGE_SIZE} numbers"
            )
        rows.append([_pixel(index, value, f"row {r}, column {c}") for c, value in enumerate(row)])
    return np.asarray(rows, dtype=np.float32)


def _pixel(index: int, value: Any, where: str) -> float:
    """One value as a float in [0, 16], or the InvalidInputError naming where it is."""
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise InvalidInputError(index, f"{where}: expected a number, got {_kind(value)}")
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        raise InvalidInputError(index, f"{where}: expected a finite number, got {value!r}")
    if not 0 <= value <= MAX_PIXEL:
        raise InvalidInputError(
            index, f"{where}: {value!r} is outside the range [0, {MAX_PIXEL:g}]"
        )
    return float(value)


def _kind(value: Any) -> str:
    """How an error message names a value that is not what was expected."""
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return f"a bool ({value!r})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, int | float | np.integer | np.floating):
        return f"a number ({value!r})"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
