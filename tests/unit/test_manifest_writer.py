"""`kinfer models add`: a Hugging Face folder becomes a repository version that serves."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from models import deployment
from models.errors import ModelFolderError
from models.manifest_writer import add_encoder
from models.repository import ManifestError, read_manifest, scan
from models.runner import ModelRunner, RunnerConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TINY = FIXTURES / "tiny-bert"

pytestmark = pytest.mark.timeout(120)


def test_an_added_folder_serves_with_parity(tmp_path: Path) -> None:
    path = add_encoder(TINY, tmp_path, name="tiny", version="1", aliases=("default",))
    folder = read_manifest(path)
    manifest = folder.manifest
    assert (manifest.name, manifest.version, manifest.kind) == ("tiny", "1", "bert-encoder")
    assert manifest.outputs.dim == 128
    assert manifest.inputs.max_tokens == 128
    assert manifest.preprocessing.pooling == "cls"
    assert manifest.buckets.seq == (16, 32, 64, 128)
    assert "model.safetensors" in manifest.files
    found, problems = scan(tmp_path)
    assert [f.key for f in found] == [("tiny", "1")]
    assert problems == []
    runner = deployment.build(folder, RunnerConfig(batch_buckets=(1, 8)))
    assert isinstance(runner, ModelRunner)
    cases = orjson.loads((FIXTURES / "tiny_bert_parity.json").read_bytes())["cases"][:12]
    rows, _ = runner.infer([case["text"] for case in cases])
    expected = np.asarray([case["embedding"] for case in cases], np.float32)
    cosine = np.einsum("ij,ij->i", rows, expected) / (
        np.linalg.norm(rows, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() >= 0.9999
    assert runner.version == "1"
    runner.close()


def test_a_version_is_never_overwritten(tmp_path: Path) -> None:
    add_encoder(TINY, tmp_path, name="tiny", version="1")
    with pytest.raises(ManifestError, match="exists already"):
        add_encoder(TINY, tmp_path, name="tiny", version="1")


def test_a_folder_that_cannot_serve_is_refused_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(TINY, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelFolderError, match=r"tokenizer\.json"):
        add_encoder(broken, tmp_path / "repo", name="broken", version="1")
    assert not (tmp_path / "repo" / "broken" / "1" / "manifest.toml").exists()


def test_a_changed_file_is_refused_by_its_sha256(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(TINY, copy)
    path = add_encoder(copy, tmp_path / "repo", name="tiny", version="1")
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    found, problems = scan(tmp_path / "repo")
    assert found == []
    assert "config.json" in problems[0].error.path
    assert "sha256" in problems[0].error.reason
    assert path.exists()
