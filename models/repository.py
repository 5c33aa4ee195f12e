"""The model repository: one folder per model and version, each described by a manifest.

Layout (``KINFER_MODEL_REPOSITORY``; the default is `SHIPPED_REPOSITORY`, the models kinfer
ships)::

    <repository>/<name>/<version>/manifest.toml

A manifest names the model and version, its task and kind (the code that serves it), the input
and output schema, preprocessing, pooling and normalisation, shape buckets, the files it needs
with their sha256, and the metrics measured when it was made. Its files live in the manifest's
folder, or in an installed package's folder (``source.package``), so a manifest can reference
weights a package ships instead of copying them.

`scan()` reads every manifest; a folder whose manifest is malformed, names an unknown field or
kind, lacks a file or has a file whose sha256 differs is reported as a `ModelProblem` naming the
file, and never stops the other folders from being served.
"""

from __future__ import annotations

import hashlib
import importlib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.errors import ModelError

__all__ = [
    "KINDS",
    "SHIPPED_REPOSITORY",
    "Manifest",
    "ManifestError",
    "ModelFolder",
    "ModelProblem",
    "scan",
    "sha256_of",
    "verify_files",
    "version_order",
]

SHIPPED_REPOSITORY = Path(__file__).resolve().parent / "catalog"
MANIFEST_NAME = "manifest.toml"
#: The kinds of model kinfer knows how to serve, and their task.
KINDS = {"bert-encoder": "sentence-embedding", "digits-cnn": "image-classification"}
_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"


class ManifestError(ModelError, ValueError):
    """A model folder that cannot be served: names the file and says why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where the model's files are: the manifest's folder, or an installed package's folder."""

    package: str | None = Field(
        None, description="A Python package whose get_model_path() holds the files."
    )
    path: str = Field(".", description="Folder of the files, relative to the manifest's.")


class InputSchema(_Strict):
    """What one input is."""

    type: Literal["text", "image"]
    max_tokens: int | None = Field(None, ge=1, description="Texts: truncation length.")
    shape: tuple[int, ...] | None = Field(None, description="Images: (rows, columns).")
    minimum: float | None = None
    maximum: float | None = None


class OutputSchema(_Strict):
    """What one output is."""

    type: Literal["embedding", "classification"]
    dim: int | None = Field(None, ge=1, description="Embeddings: width of a row.")
    classes: int | None = Field(None, ge=2, description="Classifiers: number of labels.")


class Preprocessing(_Strict):
    """How inputs become model inputs, and how outputs are pooled."""

    tokenizer: str | None = Field(None, description="Texts: tokenizer.json, in the files.")
    lowercase: bool | None = None
    pooling: Literal["mean", "cls", "max"] | None = None
    normalize: bool = False
    scale: float | None = Field(None, description="Images: divide pixel values by this.")


class Buckets(_Strict):
    """Compiled shapes; absent fields take the worker's settings."""

    batch: tuple[int, ...] | None = None
    seq: tuple[int, ...] | None = None


class Manifest(_Strict):
    """One model version, as its manifest.toml describes it."""

    name: str = Field(pattern=_NAME_PATTERN)
    version: str = Field(pattern=_NAME_PATTERN)
    task: Literal["sentence-embedding", "image-classification"]
    kind: str
    description: str = ""
    aliases: tuple[str, ...] = Field(
        (), description="Other names of this version, e.g. 'default' (a request's 'version')."
    )
    dtype: Literal["float32", "bfloat16"] = "float32"
    quantization: Literal["none", "int8-weight-only"] = "none"
    source: Source = Source()
    inputs: InputSchema
    outputs: OutputSchema
    preprocessing: Preprocessing = Preprocessing()
    buckets: Buckets = Buckets()
    files: dict[str, str] = Field(description="File name -> sha256 (hex).")
    metrics: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
        return kind

    @field_validator("files")
    @classmethod
    def _hex_digests(cls, files: dict[str, str]) -> dict[str, str]:
        if not files:
            raise ValueError("a model lists at least one file")
        for name, digest in files.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"files.{name!r}: sha256 must be 64 lower-case hex digits")
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"files.{name!r}: must be a path inside the model's folder")
        return files


@dataclass(frozen=True)
class ModelFolder:
    """A manifest that parsed, and the folder its files are in."""

    manifest: Manifest
    manifest_path: Path
    files_dir: Path

    @property
    def key(self) -> tuple[str, str]:
        """(name, version)."""
        return self.manifest.name, self.manifest.version

    def file(self, name: str) -> Path:
        """Path of one of the manifest's files."""
        return self.files_dir / name


@dataclass(frozen=True)
class ModelProblem:
    """A model folder that cannot be served, and why."""

    folder: Path
    error: ManifestError


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path) -> ModelFolder:
    """Parse one manifest.toml and locate its files (not yet checked).

    Raises:
        ManifestError: unreadable TOML, unknown or missing fields, a folder that does not
            match the name and version, or a source package that is not installed.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(path, f"cannot read the manifest: {exc}") from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'manifest'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ManifestError(path, problems) from None
    folder = path.parent
    if (folder.parent.name, folder.name) != (manifest.name, manifest.version):
        raise ManifestError(
            path,
            f"declares {manifest.name}/{manifest.version} but lies in "
            f"{folder.parent.name}/{folder.name}",
        )
    return ModelFolder(manifest, path, _files_dir(manifest, folder, path))


def _files_dir(manifest: Manifest, folder: Path, path: Path) -> Path:
    if manifest.source.package is None:
        return (folder / manifest.source.path).resolve()
    try:
        package = importlib.import_module(manifest.source.package)
    except ImportError:
        raise ManifestError(
            path, f"source package {manifest.source.package!r} is not installed"
        ) from None
    base = Path(package.get_model_path()) if hasattr(package, "get_model_path") else None
    if base is None:
        raise ManifestError(path, f"{manifest.source.package!r} has no get_model_path()")
    return (base / manifest.source.path).resolve()


def verify_files(folder: ModelFolder) -> None:
    """Check that every listed file exists and has its sha256.

    Raises:
        ManifestError: naming the missing or mismatching file.
    """
    for name, expected in folder.manifest.files.items():
        path = folder.file(name)
        if not path.is_file():
            raise ManifestError(path, f"missing (listed in {folder.manifest_path})")
        actual = sha256_of(path)
        if actual != expected:
            raise ManifestError(
                path,
                f"sha256 {actual} does not match {expected} in {folder.manifest_path}",
            )


def scan(
    repository: Path | str = SHIPPED_REPOSITORY,
    *,
    only: Iterable[str] | None = None,
    verify: bool = True,
) -> tuple[list[ModelFolder], list[ModelProblem]]:
    """Every model folder of the repository, and the folders that cannot be served.

    Args:
        only: model names to keep (None: all).
        verify: check every file's sha256 (reads every weights file once).
    """
    root = Path(repository)
    wanted = None if only is None else set(only)
    found: list[ModelFolder] = []
    problems: list[ModelProblem] = []
    if not root.is_dir():
        error = ManifestError(root, "the model repository is not a folder")
        return [], [ModelProblem(root, error)]
    for path in sorted(root.glob(f"*/*/{MANIFEST_NAME}")):
        if wanted is not None and path.parent.parent.name not in wanted:
            continue
        try:
            folder = read_manifest(path)
            if verify:
                verify_files(folder)
        except ManifestError as exc:
            problems.append(ModelProblem(path.parent, exc))
            continue
        found.append(folder)
    return found, problems


def default_version(folders: Iterable[ModelFolder], name: str) -> ModelFolder | None:
    """The version a request without one gets: the newest aliased 'default', else the newest.

    Newest compares versions as numbers where they are numbers ("10" after "9"), else as text.
    """
    candidates = [folder for folder in folders if folder.manifest.name == name]
    aliased = [folder for folder in candidates if "default" in folder.manifest.aliases]
    if not candidates:
        return None
    return max(aliased or candidates, key=lambda folder: version_order(folder.manifest.version))


def version_order(version: str) -> tuple[Any, ...]:
    """A sort key of versions: numeric parts as numbers ("10" after "9"), others as text."""
    parts: list[tuple[int, Any]] = []
    for part in version.replace("-", ".").split("."):
        parts.append((0, int(part)) if part.isdigit() else (1, part))
    return tuple(parts)
