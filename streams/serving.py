"""The bridge to ``models/``: load the served model with kinfer's settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from streams.settings import Settings

if TYPE_CHECKING:
    from models.runner import ModelRunner


class ServedRunner:
    """A warmed-up model runner, shaped as the batcher calls it."""

    def __init__(self, runner: ModelRunner) -> None:
        self._runner = runner
        self.name: str = runner.name
        self.version: str = runner.version
        self.output_dim: int = runner.output_dim

    async def infer_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, Mapping[str, float]]:
        """Embed ``texts`` on the runner's compute thread; rows in input order, and timing."""
        rows, timing = await self._runner.infer_async(texts)
        return rows, {"tokenize_ms": timing.tokenize_ms, "compute_ms": timing.compute_ms}

    def close(self) -> None:
        """Stop the compute thread."""
        self._runner.close()


def runner_config(settings: Settings) -> object:
    """The models package's RunnerConfig for these settings."""
    from models.runner import RunnerConfig

    return RunnerConfig(
        batch_buckets=settings.batch_buckets,
        seq_buckets=settings.seq_buckets,
        dtype=settings.dtype,
        call_cost_rows=settings.call_cost_rows,
    )


def load_runner(settings: Settings) -> ServedRunner:
    """Load the served model and compile every shape bucket (blocking: call off the loop)."""
    from models import registry

    runner = registry.load(settings.model, config=runner_config(settings))  # type: ignore[arg-type]
    runner.warm_up()
    return ServedRunner(runner)
