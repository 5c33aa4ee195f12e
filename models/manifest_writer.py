"""Write a repository version for a BERT-family encoder folder: ``kinfer models add``.

`add_encoder(folder, repository, name=, version=)` reads the folder as the worker will
(`models.bert.config.read_spec`: shape, pooling, normalisation, input length; every refusal
names its file), then writes ``<repository>/<name>/<version>/manifest.toml``. The manifest
points at the folder (``source.path``) instead of copying its weights, and lists every file the
encoder reads with its sha256, so a worker refuses the version if a file changes afterwards.
No JAX is imported: it runs where the model was saved.
"""

from __future__ import annotations

from pathlib import Path

from models.bert.config import read_spec
from models.repository import MANIFEST_NAME, ManifestError, read_manifest, sha256_of

__all__ = ["add_encoder"]

#: Files of the Hugging Face / sentence-transformers layout the encoder may read.
_OPTIONAL = (
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
    "tokenizer_config.json",
    "config_sentence_transformers.json",
)


def add_encoder(
    folder: Path,
    repository: Path,
    *,
    name: str,
    version: str,
    aliases: tuple[str, ...] = (),
    dtype: str = "float32",
) -> Path:
    """Write the manifest of ``folder`` as ``name`` ``version``; returns its path.

    Raises:
        models.errors.ModelFolderError: the folder cannot be served (names the file).
        ManifestError: the version exists already, or the manifest does not validate.
    """
    folder = folder.resolve()
    spec = read_spec(folder)
    target = repository / name / version
    manifest_path = target / MANIFEST_NAME
    if manifest_path.exists():
        raise ManifestError(manifest_path, "this version exists already: versions never change")
    files = {
        path.relative_to(folder).as_posix(): sha256_of(path)
        for path in _served_files(folder, spec.transformer_dir)
    }
    lines = [
        f"# written by `kinfer models add {folder}`",
        f"name = {_toml(name)}",
        f"version = {_toml(version)}",
        'task = "sentence-embedding"',
        'kind = "bert-encoder"',
        f"description = {_toml(f'BERT-family encoder from {folder.name}')}",
        f"aliases = [{', '.join(map(_toml, aliases))}]",
        f"dtype = {_toml(dtype)}",
        "",
        "[source]",
        f"path = {_toml(str(folder))}",
        "",
        "[inputs]",
        'type = "text"',
        f"max_tokens = {spec.max_seq_length}",
        "",
        "[outputs]",
        'type = "embedding"',
        f"dim = {spec.config.hidden_size}",
        "",
        "[preprocessing]",
        'tokenizer = "tokenizer.json"',
        f"lowercase = {str(spec.lowercase).lower()}",
        f"pooling = {_toml(spec.pooling.mode)}",
        f"normalize = {str(spec.pooling.normalize).lower()}",
        "",
        "[buckets]",
        f"seq = [{', '.join(map(str, _seq_buckets(spec.max_seq_length)))}]",
        "",
        "[files]",
        *(f"{_toml(file)} = {_toml(digest)}" for file, digest in files.items()),
        "",
    ]
    target.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text("\n".join(lines))
    try:
        read_manifest(manifest_path)  # what the worker will read
    except ManifestError:
        manifest_path.unlink()
        raise
    return manifest_path


def _served_files(folder: Path, transformer_dir: Path) -> list[Path]:
    required = [transformer_dir / n for n in ("config.json", "model.safetensors", "tokenizer.json")]
    optional = [folder / name for name in _OPTIONAL if (folder / name).is_file()]
    return required + optional


def _seq_buckets(max_tokens: int) -> list[int]:
    """Row lengths to compile: powers of two from 16 below the model's limit, and the limit."""
    buckets = [length for length in (16, 32, 64, 128, 256, 512) if length < max_tokens]
    return [*buckets, max_tokens]


def _toml(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
