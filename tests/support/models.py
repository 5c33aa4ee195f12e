"""Model tables for pipeline tests: one text model around a batcher, as a worker serves it."""

from __future__ import annotations

from streams.batching import MicroBatcher
from streams.model_io import EmbeddingOutputs, TextInputs
from streams.model_table import ModelTable, ServedVersion, VersionStatus


def served_text(batcher: MicroBatcher, name: str = "minilm", version: str = "v1") -> ServedVersion:
    """A served text model (embeddings) around ``batcher`` (started by the caller)."""
    return ServedVersion(
        name=name,
        version=version,
        inputs=TextInputs(max_tokens=256),
        outputs=EmbeddingOutputs(),
        batcher=batcher,
        status=VersionStatus(name, version, state="ready"),
    )


def text_table(batcher: MicroBatcher, name: str = "minilm", version: str = "v1") -> ModelTable:
    """A table serving one text model around ``batcher``."""
    table = ModelTable()
    table.add(served_text(batcher, name, version))
    return table
