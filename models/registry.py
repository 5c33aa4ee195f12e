"""Model names -> servables: `load("minilm")` returns a ready (not yet warm) `ModelRunner`."""

from __future__ import annotations

from collections.abc import Mapping
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


def load(name: str = DEFAULT_MODEL, *, config: RunnerConfig | None = None) -> ModelRunner:
    """Build the named model's runner; call `warm_up()` on it before serving.

    Raises:
        UnknownModelError: `name` is not in KNOWN_MODELS.
    """
    factory = KNOWN_MODELS.get(name)
    if factory is None:
        raise UnknownModelError(name, KNOWN_MODELS)
    config = config or RunnerConfig()
    return ModelRunner(factory(config.dtype), config)
