"""The bridge to ``models/``: models shaped as the batcher drives them, built from settings.

`ServedRunner` drives a text encoder's `ModelRunner` (tokenise, pack, compute);
`ServedClassifier` drives the digits classifier (images need no preparation). `load_version`
builds, warms and wraps one repository folder; `load_runner` serves a folder given by
``KINFER_MODEL_DIR`` (or the bench's zero-cost double) outside the repository.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from models.compiles import expected as expected_compiles
from streams.batch_model import Prepared
from streams.settings import Settings

if TYPE_CHECKING:
    from models.digits.classifier import DigitsClassifier
    from models.packing import PackedCall
    from models.runner import ModelRunner


#: A prepare call this small tokenises on the event loop (a few tens of microseconds, less
#: than the hand-over to the host thread costs); larger ones run on the host thread.
INLINE_TEXTS = 16
INLINE_CHARS = 4096


@dataclass(frozen=True, slots=True)
class _Packed:
    calls: Sequence[PackedCall]
    count: int
    pack_ms: float


class ServedRunner:
    """A warmed-up model runner, shaped as the batcher drives it (a `BatchModel`).

    ``prepare`` tokenises every waiting request in one call on the runner's host thread;
    ``pack`` lays a batch out in rows (host thread); ``compute`` runs it (compute thread).
    """

    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner
        self.name: str = runner.name
        self.version: str = runner.version
        self.output_dim: int = runner.output_dim
        self.seq_buckets: tuple[int, ...] = tuple(runner.config.seq_buckets)

    def compiled_shapes(self) -> tuple[str, ...]:
        """Compiled (rows x tokens) shapes, e.g. ``16x128``."""
        return tuple(f"{b}x{s}" for b, s in sorted(self._runner.compiled_shapes))

    async def prepare(
        self, groups: Sequence[Sequence[Any]]
    ) -> tuple[list[Prepared], Mapping[str, float]]:
        """Tokenise several requests' texts at once; one token batch per request."""
        started = time.perf_counter()
        sizes = [len(group) for group in groups]
        texts = groups[0] if len(groups) == 1 else list(itertools.chain.from_iterable(groups))
        if len(texts) <= INLINE_TEXTS and sum(map(len, texts)) <= INLINE_CHARS:
            tokens = self._runner.tokenize(texts)  # cheaper than a hop to the host thread
        else:
            tokens = await self._runner.tokenize_async(texts)
        tokenize_ms = (time.perf_counter() - started) * 1e3
        if len(groups) == 1:
            return [tokens], {"tokenize_ms": tokenize_ms}
        bounds = np.cumsum([0, *sizes]).tolist()
        parts: list[Prepared] = [
            tokens.slice(start, stop) for start, stop in itertools.pairwise(bounds)
        ]
        return parts, {"tokenize_ms": tokenize_ms}

    async def pack(self, parts: Sequence[Prepared]) -> _Packed:
        """Pack one batch's token sequences into rows (host thread)."""
        from models.packing import TokenBatch

        started = time.perf_counter()
        tokens = TokenBatch.concat(parts)  # type: ignore[arg-type]
        calls = await self._runner.pack_async(tokens)
        return _Packed(calls, len(tokens), (time.perf_counter() - started) * 1e3)

    async def compute(self, packed: _Packed) -> tuple[np.ndarray, Mapping[str, float]]:
        """Run a packed batch (compute thread); rows in the parts' order, and timing."""
        started = time.perf_counter()
        rows = await self._runner.compute_async(packed.calls, packed.count)
        real = sum(call.real_tokens for call in packed.calls)
        computed = sum(call.computed_tokens for call in packed.calls)
        return rows, {
            "pack_ms": packed.pack_ms,
            "compute_ms": (time.perf_counter() - started) * 1e3,
            "real_tokens": float(real),
            "computed_tokens": float(computed),
        }

    def close(self) -> None:
        """Stop the runner's threads."""
        self._runner.close()


@dataclass(frozen=True, slots=True)
class _Images:
    """Validated (n, 8, 8) images: each costs 1."""

    images: np.ndarray

    @property
    def costs(self) -> np.ndarray:
        return np.ones(len(self.images), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def slice(self, start: int, stop: int) -> _Images:
        return _Images(self.images[start:stop])


class ServedClassifier:
    """The digits classifier as a `BatchModel`: its forward calls on a thread of its own."""

    def __init__(self, classifier: DigitsClassifier) -> None:
        self._classifier = classifier
        self._compute = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"{classifier.name}-compute"
        )

    async def prepare(
        self, groups: Sequence[Sequence[Any]]
    ) -> tuple[list[Prepared], Mapping[str, float]]:
        """Validated images need no preparation."""
        return [_Images(np.asarray(group, dtype=np.float32)) for group in groups], {}

    async def pack(self, parts: Sequence[Prepared]) -> np.ndarray:
        """Every part's images in one array."""
        images = [part.images for part in parts]  # type: ignore[attr-defined]
        return images[0] if len(images) == 1 else np.concatenate(images)

    async def compute(self, images: np.ndarray) -> tuple[np.ndarray, Mapping[str, float]]:
        """Class probabilities, one row per image."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(self._compute, self._classifier.predict_proba, images)
        return rows, {"compute_ms": (time.perf_counter() - started) * 1e3}

    def close(self) -> None:
        """Stop the compute thread (after the call it runs)."""
        self._compute.shutdown(wait=True)


def runner_config(settings: Settings) -> object:
    """The models package's RunnerConfig for these settings."""
    from models.runner import RunnerConfig

    return RunnerConfig(
        batch_buckets=settings.batch_buckets,
        seq_buckets=settings.seq_buckets,
        dtype=settings.dtype,
        call_cost_rows=settings.call_cost_rows,
        pack_length=settings.pack_length,
    )


@expected_compiles()  # loading and warm-up compile; nothing else may (models/compiles.py)
def load_runner(settings: Settings) -> ServedRunner:
    """Load the served model and compile every shape bucket (blocking: call off the loop)."""
    from models import registry

    runner = registry.load(
        settings.model,
        config=runner_config(settings),  # type: ignore[arg-type]
        model_dir=settings.model_dir,
        zero_cost=settings.bench_zero_cost,
    )
    runner.warm_up()
    return ServedRunner(runner)
