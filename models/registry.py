"""Model names -> servables: `load("minilm")` returns a ready (not yet warm) `ModelRunner`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from models.errors import UnknownModelError
from models.runner import ModelRunner, RunnerConfig
from models.servable import Servable, ServableFactory

__all__ = ["DEFAULT_MODEL", "KNOWN_MODELS", "load"]

DEFAULT_MODEL = "minilm"


def _minilm(dtype: str) -> Servable:
    from models.minilm.servable import build  # imported on use: loads weights and Flax

    return build(dtype)


KNOWN_MODELS: Mapping[str, ServableFactory] = MappingProxyType({"minilm": _minilm})
"""Every servable model name and the factory that builds it for a compute dtype."""


def load(
    name: str = DEFAULT_MODEL,
    *,
    config: RunnerConfig | None = None,
    model_dir: str | Path | None = None,
    zero_cost: str = "off",
) -> ModelRunner:
    """Build the named model's runner; call `warm_up()` on it before serving.

    Args:
        model_dir: load the model from this folder (Hugging Face layout) instead of the
            installed weights package.
        zero_cost: benchmarks only: "model" or "model-and-tokenizer" serve the zero-cost
            double (`models.zero_cost`) under the model's name.

    Raises:
        UnknownModelError: `name` is not in KNOWN_MODELS.
    """
    factory = KNOWN_MODELS.get(name)
    if factory is None:
        raise UnknownModelError(name, KNOWN_MODELS)
    config = config or RunnerConfig()
    if zero_cost != "off":
        from models.zero_cost import ZeroCostServable

        return ModelRunner(ZeroCostServable(name, zero_cost, model_dir), config)
    if model_dir is not None:
        from models.minilm.servable import build

        return ModelRunner(build(config.dtype, model_dir), config)
    return ModelRunner(factory(config.dtype), config)
