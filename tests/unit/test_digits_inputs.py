"""Request inputs for the digits model (validate_images) and its answer rows (top_k, rows)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from models.digits.classifier import output_rows, top_k
from models.digits.inputs import validate_images
from models.errors import InvalidInputError, ModelError

IMAGE = np.arange(64, dtype=np.float32).reshape(8, 8) % 17  # values 0..16
NESTED = IMAGE.astype(int).tolist()
FLAT = IMAGE.reshape(64).astype(int).tolist()


def _nested(value: Any, row: int = 2, column: int = 5) -> list[list[Any]]:
    image: list[list[Any]] = [list(r) for r in NESTED]
    image[row][column] = value
    return image


def _flat(value: Any, position: int = 10) -> list[Any]:
    image: list[Any] = list(FLAT)
    image[position] = value
    return image


@pytest.mark.parametrize(
    "inputs",
    [
        [NESTED, NESTED],
        [FLAT, FLAT],
        [IMAGE.tolist(), FLAT],  # floats, and layouts mixed in one request
        [tuple(map(tuple, NESTED))],
        np.stack([IMAGE, IMAGE]),
        [IMAGE, IMAGE.reshape(64).astype(np.int64)],  # arrays inside a list
    ],
    ids=["nested", "flat", "mixed", "tuples", "ndarray", "list-of-arrays"],
)
def test_valid_inputs(inputs: Any) -> None:
    images = validate_images(inputs)
    assert images.dtype == np.float32
    assert images.shape == (len(inputs), 8, 8)
    for image in images:
        np.testing.assert_array_equal(image, IMAGE)


def test_bounds_are_inclusive_and_empty_is_empty() -> None:
    images = validate_images([[[0] * 8] * 8, [16.0] * 64])
    assert images.min() == 0
    assert images.max() == 16
    assert validate_images([]).shape == (0, 8, 8)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (NESTED[:7], "expected 8 rows of 8 numbers or 64 numbers, got 7 rows"),
        (FLAT[:63], "expected 8 rows of 8 numbers or 64 numbers, got 63 numbers"),
        (FLAT[:8], "expected 8 rows of 8 numbers or 64 numbers, got 8 numbers"),
        ([*NESTED[:7], 3], "got a mix of 7 rows and 1 other values"),
        ("x" * 64, "expected 8 rows of 8 numbers or 64 numbers, got a string"),
        (None, "expected 8 rows of 8 numbers or 64 numbers, got null"),
        (5, "got a number (5)"),
        ({"pixels": FLAT}, "got an object"),
        ([*NESTED[:7], NESTED[7][:7]], "row 7 has 7 values, expected 8 numbers"),
        (_nested(True), "row 2, column 5: expected a number, got a bool (True)"),
        (_nested("3"), "row 2, column 5: expected a number, got a string"),
        (_nested(None), "row 2, column 5: expected a number, got null"),
        (_nested(float("nan")), "row 2, column 5: expected a finite number, got nan"),
        (_nested(float("inf")), "row 2, column 5: expected a finite number, got inf"),
        (_nested(16.5), "row 2, column 5: 16.5 is outside the range [0, 16]"),
        (_nested(-1), "row 2, column 5: -1 is outside the range [0, 16]"),
        (_nested(10**30), f"row 2, column 5: {10**30} is outside the range [0, 16]"),
        (_flat(False), "position 10: expected a number, got a bool (False)"),
        (_flat(17), "position 10: 17 is outside the range [0, 16]"),
        (_flat(float("-inf")), "position 10: expected a finite number, got -inf"),
    ],
)
def test_errors_name_the_index_and_the_reason(bad: Any, reason: str) -> None:
    inputs = [NESTED, FLAT, NESTED, bad, _nested(True)]  # the first bad input is reported
    with pytest.raises(InvalidInputError) as caught:
        validate_images(inputs)
    error = caught.value
    assert isinstance(error, ModelError)
    assert isinstance(error, ValueError)
    assert error.index == 3
    assert reason in error.reason
    assert str(error) == f"inputs[3]: {error.reason}"


def test_bool_arrays_are_not_numbers() -> None:
    with pytest.raises(InvalidInputError, match=r"inputs\[0\]: row 0, column 0: .* a bool"):
        validate_images(np.zeros((1, 8, 8), dtype=bool))


PROBABILITIES = np.asarray(
    [
        [0.05, 0.6, 0.05, 0.1, 0.1, 0.0, 0.0, 0.0, 0.1, 0.0],
        [0.1] * 10,  # all tied: lower labels first
    ],
    dtype=np.float32,
)


def test_top_k() -> None:
    best = top_k(PROBABILITIES, 3)
    assert [[label for label, _ in row] for row in best] == [[1, 3, 4], [0, 1, 2]]
    assert best[0][0] == [1, pytest.approx(0.6)]
    assert all(isinstance(label, int) for row in best for label, _ in row)
    assert len(top_k(PROBABILITIES, 10)[0]) == 10
    for k in (0, 11, True, 2.0):
        with pytest.raises(ValueError, match="top_k must be an integer from 1 to 10"):
            top_k(PROBABILITIES, k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected \(n, classes\)"):
        top_k(PROBABILITIES[0], 3)


def test_output_rows() -> None:
    rows = output_rows(PROBABILITIES)
    assert [row["label"] for row in rows] == [1, 0]
    assert set(rows[0]) == {"label", "probabilities"}
    assert np.asarray(rows[0]["probabilities"], np.float32).tolist() == PROBABILITIES[0].tolist()
    with_best = output_rows(PROBABILITIES, top_k=2)
    assert with_best[0]["top_k"] == top_k(PROBABILITIES, 2)[0]
    assert with_best[1]["top_k"][0][0] == with_best[1]["label"]
    assert orjson.loads(orjson.dumps(with_best)) == with_best  # plain JSON values
    assert output_rows(np.zeros((0, 10), np.float32), top_k=3) == []
