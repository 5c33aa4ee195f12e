"""The models the gateway knows: the model repository's manifests, as protocol metadata.

The catalog is read from the repository (``KINFER_MODEL_REPOSITORY``, default the shipped
models) without checking the weights' sha256 (the gateway never loads them; a version the
workers cannot serve is answered by them, ``UNKNOWN_MODEL``, which the gateway turns into 404).
`refresh` reads it again, so versions added or removed there show in the metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.repository import SHIPPED_REPOSITORY, ModelFolder, default_version, scan
from streams.gateway.errors import ModelNotFound
from streams.gateway.signatures import Signature, signature_for

__all__ = ["ModelCatalog", "ModelVersion"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    """One model version of the repository, with its tensors."""

    name: str
    version: str
    aliases: tuple[str, ...]
    kind: str
    signature: Signature

    @property
    def platform(self) -> str:
        """The metadata's ``platform``: ``kinfer/<kind>``."""
        return f"kinfer/{self.kind}"


def _version_of(folder: ModelFolder) -> ModelVersion | None:
    manifest = folder.manifest
    signature = signature_for(
        manifest.task,
        manifest.inputs.type,
        manifest.outputs.type,
        dim=manifest.outputs.dim,
        classes=manifest.outputs.classes,
        shape=manifest.inputs.shape,
    )
    if signature is None:
        log.warning("%s %s: no tensor mapping for its task; not listed", *folder.key)
        return None
    return ModelVersion(
        manifest.name, manifest.version, tuple(manifest.aliases), manifest.kind, signature
    )


class ModelCatalog:
    """Model name -> versions, and the default version of each name."""

    def __init__(self, versions: Iterable[ModelVersion], defaults: Mapping[str, str]) -> None:
        self._versions: dict[str, dict[str, ModelVersion]] = {}
        for version in versions:
            self._versions.setdefault(version.name, {})[version.version] = version
        #: a name without a default given gets its last version in sorted order
        self._defaults = {
            name: defaults.get(name) or max(found) for name, found in self._versions.items()
        }

    @classmethod
    def from_repository(cls, root: Path | str | None = None) -> ModelCatalog:
        """The catalog of the repository at ``root`` (default: the shipped models)."""
        found, problems = scan(root or SHIPPED_REPOSITORY, verify=False)
        for problem in problems:
            log.warning("model folder %s not listed: %s", problem.folder, problem.error.reason)
        versions = [v for v in map(_version_of, found) if v is not None]
        listed = {(v.name, v.version) for v in versions}
        defaults: dict[str, str] = {}
        for name in {v.name for v in versions}:
            folder = default_version([f for f in found if f.key in listed], name)
            if folder is not None:
                defaults[name] = folder.manifest.version
        return cls(versions, defaults)

    def names(self) -> list[str]:
        """Every model name, sorted."""
        return sorted(self._versions)

    def versions(self, name: str) -> list[str]:
        """Every version of ``name``, the default first; [] for an unknown name."""
        known = self._versions.get(name, {})
        default = self._defaults.get(name)
        return sorted(known, key=lambda version: (version != default, version))

    def resolve(self, name: str, version: str | None = None) -> ModelVersion:
        """The version a request names (a version, an alias, or none: the default).

        Raises:
            ModelNotFound: no such model, or no such version of it, naming what there is.
        """
        known = self._versions.get(name)
        if not known:
            listing = ", ".join(self.names()) or "none"
            raise ModelNotFound(f"unknown model {name!r:.80}; models: {listing}")
        if not version:
            return known[self._defaults[name]]
        if version in known:
            return known[version]
        for candidate in known.values():
            if version in candidate.aliases:
                return candidate
        raise ModelNotFound(
            f"model {name!r} has no version {version!r:.80}; versions: "
            f"{', '.join(self.versions(name))}"
        )

    def metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The protocol's model metadata: name, versions, platform, inputs, outputs."""
        resolved = self.resolve(name, version)
        return {
            "name": name,
            "versions": [resolved.version] if version else self.versions(name),
            "platform": resolved.platform,
            "inputs": [spec.as_json() for spec in resolved.signature.inputs],
            "outputs": [spec.as_json() for spec in resolved.signature.outputs],
        }
