"""scikit-learn's bundled handwritten digits and the fixed train/test split.

1 797 images of 8x8 pixels in 0-16, ten classes. The split is stratified and seeded, so
training and every test see the same held-out images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

__all__ = ["SPLIT", "Split", "SplitParams", "load_split"]


@dataclass(frozen=True)
class SplitParams:
    """How the data set is split: `train_test_split(test_size, stratify=y, random_state)`."""

    test_size: float = 0.25
    random_state: int = 0
    stratify: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "function": "sklearn.model_selection.train_test_split",
            "test_size": self.test_size,
            "random_state": self.random_state,
            "stratify": "y" if self.stratify else None,
        }


SPLIT = SplitParams()
"""The split the committed weights were trained and measured on."""


@dataclass(frozen=True)
class Split:
    """float32 (n, 8, 8) images in 0-16 and int32 (n,) labels, train and test."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_split(params: SplitParams = SPLIT) -> Split:
    """Load the digits (bundled with scikit-learn; no download) and split them."""
    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float32)
    labels = np.asarray(digits.target, dtype=np.int32)
    train_x, test_x, train_y, test_y = train_test_split(
        images,
        labels,
        test_size=params.test_size,
        stratify=labels if params.stratify else None,
        random_state=params.random_state,
    )
    return Split(train_x, train_y, test_x, test_y)
