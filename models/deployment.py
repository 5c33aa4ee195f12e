"""A repository folder -> the object that serves it, by the manifest's kind.

`build(folder, config)` checks the folder's files against their sha256, then builds what its
``kind`` names: a `ModelRunner` over a BERT-family encoder (``bert-encoder``) or a
`DigitsClassifier` (``digits-cnn``). Neither is warm yet: call ``warm_up()`` before serving.

Shape buckets: the runner settings the caller passes win where the caller set them explicitly
(``explicit``); otherwise the manifest's ``[buckets]`` apply, and the caller's defaults fill
the rest. The manifest's dtype is the compute dtype.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import TYPE_CHECKING

from models.repository import ManifestError, ModelFolder, verify_files
from models.runner import ModelRunner, RunnerConfig

if TYPE_CHECKING:
    from models.digits.classifier import DigitsClassifier

__all__ = ["build", "device_name", "runner_config_for"]


def runner_config_for(
    folder: ModelFolder, config: RunnerConfig, explicit: Collection[str] = ()
) -> RunnerConfig:
    """``config`` with the manifest's buckets and dtype, except the fields set in ``explicit``."""
    manifest = folder.manifest
    changes: dict[str, object] = {}
    if manifest.buckets.batch is not None and "batch_buckets" not in explicit:
        changes["batch_buckets"] = tuple(manifest.buckets.batch)
    if manifest.buckets.seq is not None and "seq_buckets" not in explicit:
        seq = tuple(manifest.buckets.seq)
        changes["seq_buckets"] = seq
        if config.pack_length > seq[-1]:
            changes["pack_length"] = seq[-1]
    if "dtype" not in explicit:
        changes["dtype"] = manifest.dtype
    return dataclasses.replace(config, **changes) if changes else config  # type: ignore[arg-type]


def build(
    folder: ModelFolder,
    config: RunnerConfig | None = None,
    *,
    explicit: Collection[str] = (),
    verify: bool = True,
) -> ModelRunner | DigitsClassifier:
    """Build the serving object of ``folder`` (blocking: reads and checks its weights).

    Raises:
        ManifestError: a listed file is missing or has another sha256, or the manifest asks
            for what this kind cannot do; the message names the file.
        models.errors.ModelError: the weights do not fit the model (names the file).
    """
    if verify:
        verify_files(folder)
    manifest = folder.manifest
    if manifest.kind == "bert-encoder":
        from models.bert.servable import load_encoder

        runner_config = runner_config_for(folder, config or RunnerConfig(), explicit)
        servable = load_encoder(
            folder.files_dir,
            name=manifest.name,
            version=manifest.version,
            dtype=runner_config.dtype,
            quantization=manifest.quantization,
        )
        return ModelRunner(servable, runner_config)
    if manifest.kind == "digits-cnn":
        from models.digits.classifier import BATCH_BUCKETS, DigitsClassifier

        if manifest.quantization != "none":
            raise ManifestError(folder.manifest_path, "digits-cnn has no quantised variant")
        batch = manifest.buckets.batch
        if config is not None and "batch_buckets" in explicit:
            batch = config.batch_buckets
        return DigitsClassifier(folder.files_dir, batch_buckets=batch or BATCH_BUCKETS)
    raise ManifestError(folder.manifest_path, f"no code serves kind {manifest.kind!r}")


def device_name() -> str:
    """The default JAX device, e.g. ``cpu`` or ``cuda:0``."""
    import jax

    device = jax.devices()[0]
    return f"{device.platform}:{device.id}" if device.platform != "cpu" else "cpu"
