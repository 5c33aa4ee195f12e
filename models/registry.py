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


def _minilm(dtype: str, *, quantization: str = "none") -> Servable:
    from models.minilm.servable import build  # imported on use: loads weights and Flax

    return build(dtype, quantization=quantization)


KNOWN_MODELS: Mapping[str, ServableFactory] = MappingProxyType({"minilm": _minilm})
"""Every servable model name and the factory that builds it for a compute dtype."""


def load(
    name: str = DEFAULT_MODEL,
    *,
    config: RunnerConfig | None = None,
    model_dir: str | Path | None = None,
    zero_cost: str = "off",
    quantization: str = "none",
) -> ModelRunner:
    """Build the named model's runner; call `warm_up()` on it before serving.

    Args:
        model_dir: serve the BERT-family sentence encoder in this folder (Hugging Face /
            sentence-transformers layout, `models.bert`) under ``name``, which then need not
            be in KNOWN_MODELS. Its version is ``<name>@<folder name>``
            (``all-MiniLM-L6-v2@<folder name>`` for ``minilm``, which also keeps MiniLM's
            pooling for a folder without modules.json).
        zero_cost: benchmarks only: "model" or "model-and-tokenizer" serve the zero-cost
            double (`models.zero_cost`) under the model's name.
        quantization: "int8-weight-only" stores the encoder's dense kernels as int8 with
            per-channel scales, quantised from the float weights as they load
            (`models.bert.quantize`); "none" keeps them float32.

    Raises:
        UnknownModelError: `name` is not in KNOWN_MODELS (and no `model_dir` is given).
        models.errors.ModelFolderError: `model_dir` cannot be served; names the file.
        models.errors.UnsupportedQuantizationError: an unknown ``quantization``.
    """
    factory = KNOWN_MODELS.get(name)
    if factory is None and model_dir is None:
        raise UnknownModelError(name, KNOWN_MODELS)
    config = config or RunnerConfig()
    if zero_cost != "off":
        from models.zero_cost import ZeroCostServable

        return ModelRunner(ZeroCostServable(name, zero_cost, model_dir), config)
    if model_dir is not None:
        servable = _from_folder(name, Path(model_dir), config.dtype, quantization)
        return ModelRunner(servable, config)
    assert factory is not None
    return ModelRunner(factory(config.dtype, quantization=quantization), config)


def _from_folder(name: str, folder: Path, dtype: str, quantization: str) -> Servable:
    """The encoder in ``folder``, served as ``name``."""
    if name == "minilm":
        from models.minilm.servable import build

        return build(dtype, folder, quantization=quantization)
    from models.bert.servable import load_encoder

    return load_encoder(
        folder,
        name=name,
        version=f"{name}@{folder.name}",
        dtype=dtype,
        quantization=quantization,
    )
