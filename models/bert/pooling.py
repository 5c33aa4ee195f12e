"""What sentence-transformers does after the encoder, read from its files (pure Python, no JAX).

A sentence-transformers folder lists its modules in ``modules.json``: a ``Transformer`` (the
BERT encoder; its files are in the module's ``path``, usually the folder itself), a
``Pooling`` whose ``config.json`` (``1_Pooling/config.json``) names the pooling mode, and
optionally a ``Normalize`` (L2 normalisation). kinfer serves exactly that chain, with one
pooling mode among mean, cls and max; any other module (a ``Dense`` projection, a
``LayerNorm``, custom code) or pooling mode is refused with an error naming the file.

Both spellings of the pooling config are read: the legacy booleans
(``pooling_mode_mean_tokens``, ``pooling_mode_cls_token``, ``pooling_mode_max_tokens``, ...,
none set meaning mean) and sentence-transformers 6's ``"pooling_mode": "cls"``.

A folder without ``modules.json`` is a plain Hugging Face model: sentence-transformers then
pools by mean and does not normalise (`SENTENCE_TRANSFORMERS_DEFAULT`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from models.errors import MissingModelFileError, ModelFolderError, UnsupportedModelError

__all__ = [
    "POOLING_MODES",
    "SENTENCE_TRANSFORMERS_DEFAULT",
    "Pooling",
    "PoolingMode",
    "SentenceModules",
    "read_json",
    "read_modules",
    "read_pooling_config",
]

PoolingMode = Literal["mean", "cls", "max"]
POOLING_MODES: tuple[PoolingMode, ...] = get_args(PoolingMode)

# sentence-transformers' legacy flags, in the order its Pooling concatenates them
_LEGACY_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_PREFIX = "sentence_transformers."


@dataclass(frozen=True)
class Pooling:
    """How token vectors become one vector per text.

    Attributes:
        mode: "mean" (over the text's tokens, special tokens included), "cls" (its first
            token) or "max" (element-wise over its tokens).
        normalize: L2-normalise the pooled vector (sentence-transformers' ``Normalize``).
    """

    mode: PoolingMode = "mean"
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise ValueError(f"pooling mode {self.mode!r}: expected one of {POOLING_MODES}")


SENTENCE_TRANSFORMERS_DEFAULT = Pooling("mean", normalize=False)
"""What sentence-transformers makes of a BERT folder without ``modules.json``."""


@dataclass(frozen=True)
class SentenceModules:
    """What ``modules.json`` says: where the encoder's files are and how it pools.

    ``pooling`` is None when the folder has no ``modules.json``.
    """

    transformer_dir: Path
    pooling: Pooling | None
    pooling_config: Path | None = None
    dimension: int | None = None  # the token-vector width the pooling config declares


def read_json(path: Path) -> Any:
    """Parse a JSON file; errors name it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingModelFileError(path) from None
    except OSError as error:
        raise ModelFolderError(path, f"cannot be read ({error.strerror or error})") from error
    try:
        return json.loads(text)
    except ValueError as error:
        raise ModelFolderError(path, f"is not valid JSON ({error})") from error


def _inside(folder: Path, relative: object, source: Path) -> Path:
    """``folder / relative``, refusing paths that leave the folder."""
    if not isinstance(relative, str):
        raise ModelFolderError(source, f"module path {relative!r} is not a string")
    target = (folder / relative).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ModelFolderError(source, f"module path {relative!r} leaves the model folder")
    return target if relative else folder


def read_modules(folder: str | Path) -> SentenceModules:
    """Read ``modules.json`` (and the pooling config it points at) in ``folder``.

    Raises:
        UnsupportedModelError: a module other than Transformer, Pooling, Normalize, in that
            order, or a pooling mode kinfer does not implement.
        ModelFolderError: a file that is not the JSON sentence-transformers writes.
        MissingModelFileError: the pooling config that modules.json points at is absent.
    """
    folder = Path(folder)
    path = folder / "modules.json"
    if not path.is_file():
        return SentenceModules(folder, None)
    raw = read_json(path)
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise ModelFolderError(path, "expected a list of module objects")
    kinds = [_kind(module.get("type"), path) for module in raw]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        listed = ", ".join(str(module.get("type")) for module in raw) or "no modules"
        raise UnsupportedModelError(
            path,
            f"lists {listed}; kinfer serves a Transformer, a Pooling and optionally a "
            "Normalize, in that order (no Dense, LayerNorm or custom modules)",
        )
    transformer_dir = _inside(folder, raw[0].get("path", ""), path)
    pooling_config = _inside(folder, raw[1].get("path"), path) / "config.json"
    mode, dimension = read_pooling_config(pooling_config)
    pooling = Pooling(mode, normalize=len(kinds) == 3)
    return SentenceModules(transformer_dir, pooling, pooling_config, dimension)


def _kind(type_name: object, path: Path) -> str:
    """The class name (Transformer, Pooling, ...) of a sentence-transformers module type."""
    if not isinstance(type_name, str):
        raise ModelFolderError(path, f"module type {type_name!r} is not a string")
    if not type_name.startswith(_PREFIX):
        return type_name  # custom code: never one of ours
    # "sentence_transformers.models.Pooling" (ST < 6) or "...modules.pooling.Pooling" (ST 6)
    return type_name.rsplit(".", 1)[-1]


def read_pooling_config(path: Path) -> tuple[PoolingMode, int | None]:
    """The pooling mode of a sentence-transformers ``Pooling`` config.json, and its width.

    Raises:
        UnsupportedModelError: several modes at once (concatenated), or a mode other than
            mean, cls and max (mean_sqrt_len_tokens, weightedmean, lasttoken).
    """
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ModelFolderError(path, "expected a JSON object")
    if "pooling_mode" in raw:
        value = raw["pooling_mode"]
        modes = [value] if isinstance(value, str) else value
        if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
            raise ModelFolderError(path, f"pooling_mode {value!r} is not a mode or a list")
    else:
        modes = [mode for flag, mode in _LEGACY_FLAGS.items() if raw.get(flag)] or ["mean"]
    if len(modes) != 1:
        raise UnsupportedModelError(
            path, f"concatenates several poolings {modes}; kinfer pools by one mode"
        )
    mode = modes[0]
    width = raw.get("embedding_dimension", raw.get("word_embedding_dimension"))
    dimension = width if isinstance(width, int) and not isinstance(width, bool) else None
    for supported in POOLING_MODES:
        if mode == supported:
            return supported, dimension
    raise UnsupportedModelError(
        path, f"pooling mode {mode!r} is not supported (supported: {', '.join(POOLING_MODES)})"
    )
