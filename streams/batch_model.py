"""What the micro-batcher drives: a model's prepare, pack and compute stages, and adapters.

`BatchModel` is the seam between batching and a model: ``prepare`` turns requests' inputs into
`Prepared` (each input with its cost: tokens for text, 1 otherwise), ``pack`` lays a batch out
for the device, ``compute`` runs it. `UnpreparedModel` and `FunctionModel` adapt models whose
inputs need no preparation.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["BatchModel", "FunctionModel", "Prepared", "UnpreparedModel"]


class Prepared(Protocol):
    """A request's inputs after preparation (e.g. token ids), sliceable by input."""

    @property
    def costs(self) -> np.ndarray:
        """Cost of each input (tokens for text, 1 for inputs without preparation)."""
        ...

    def __len__(self) -> int: ...

    def slice(self, start: int, stop: int) -> Prepared:
        """Inputs ``start`` up to ``stop``."""
        ...


class BatchModel(Protocol):
    """What the batcher drives: prepare, pack and compute, each off the event loop."""

    async def prepare(
        self, groups: Sequence[Sequence[Any]]
    ) -> tuple[list[Prepared], Mapping[str, float]]:
        """Prepare several requests' inputs in one call; one `Prepared` per group, and timing."""
        ...

    async def pack(self, parts: Sequence[Prepared]) -> Any:
        """Lay one batch out for the device (host work; may overlap another batch's compute)."""
        ...

    async def compute(self, packed: Any) -> tuple[np.ndarray, Mapping[str, float]]:
        """Run a packed batch; ``rows[i]`` answers the i-th input of its parts, in order."""
        ...


@dataclass(frozen=True, slots=True)
class _Items:
    """Inputs that need no preparation: each costs 1."""

    items: Sequence[Any]

    @property
    def costs(self) -> np.ndarray:
        return np.ones(len(self.items), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    def slice(self, start: int, stop: int) -> _Items:
        return _Items(self.items[start:stop])


class UnpreparedModel:
    """A `BatchModel` for inputs that need no preparation; subclasses define `infer_rows`."""

    async def infer_rows(self, inputs: Sequence[Any]) -> tuple[np.ndarray, Mapping[str, float]]:
        """Rows for ``inputs``, in order, and timing."""
        raise NotImplementedError

    async def prepare(
        self, groups: Sequence[Sequence[Any]]
    ) -> tuple[list[Prepared], Mapping[str, float]]:
        """Nothing to prepare: each group as it is."""
        return [_Items(group) for group in groups], {}

    async def pack(self, parts: Sequence[Prepared]) -> Any:
        """Every part's inputs in one list."""
        return list(itertools.chain.from_iterable(part.items for part in parts))  # type: ignore[attr-defined]

    async def compute(self, packed: Any) -> tuple[np.ndarray, Mapping[str, float]]:
        """`infer_rows` over the batch."""
        return await self.infer_rows(packed)


class FunctionModel(UnpreparedModel):
    """An `UnpreparedModel` around a coroutine function ``inputs -> (rows, timing)``."""

    def __init__(
        self, infer: Callable[[Sequence[Any]], Awaitable[tuple[np.ndarray, Mapping[str, float]]]]
    ) -> None:
        self._infer = infer

    async def infer_rows(self, inputs: Sequence[Any]) -> tuple[np.ndarray, Mapping[str, float]]:
        return await self._infer(inputs)
