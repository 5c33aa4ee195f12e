"""The model repository: manifests, sha256 checks, and folders that must not stop the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.repository import (
    ManifestError,
    default_version,
    read_manifest,
    scan,
    sha256_of,
    verify_files,
)

WEIGHTS = b"not really weights, but bytes with a known sha256"


def write_model(
    root: Path, name: str, version: str, *, extra: str = "", files: dict[str, bytes] | None = None
) -> Path:
    """A model folder with a manifest listing its files with their true sha256."""
    folder = root / name / version
    folder.mkdir(parents=True)
    files = {"model.safetensors": WEIGHTS} if files is None else files
    listing = []
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
        listing.append(f'"{file_name}" = "{sha256_of(folder / file_name)}"')
    (folder / "manifest.toml").write_text(
        f"""
name = "{name}"
version = "{version}"
task = "image-classification"
kind = "digits-cnn"
{extra}
[inputs]
type = "image"
shape = [8, 8]
minimum = 0
maximum = 16
[outputs]
type = "classification"
classes = 10
[files]
{chr(10).join(listing)}
[metrics]
accuracy = 0.98
""",
        encoding="utf-8",
    )
    return folder


def test_a_good_folder_is_read_and_verified(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "digits", "1")
    model = read_manifest(folder / "manifest.toml")
    verify_files(model)
    assert model.key == ("digits", "1")
    assert model.manifest.outputs.classes == 10
    assert model.manifest.metrics == {"accuracy": 0.98}
    assert model.file("model.safetensors") == folder / "model.safetensors"


def test_a_changed_weights_file_is_refused_naming_it(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "digits", "1")
    (folder / "model.safetensors").write_bytes(WEIGHTS + b"!")
    with pytest.raises(ManifestError, match=r"model\.safetensors: sha256 [0-9a-f]{64} does not"):
        verify_files(read_manifest(folder / "manifest.toml"))


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "digits", "1")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ManifestError, match=r"model\.safetensors: missing \(listed in .*manifest"):
        verify_files(read_manifest(folder / "manifest.toml"))


def test_an_unknown_field_is_refused_naming_the_manifest(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "digits", "1", extra='colour = "blue"')
    with pytest.raises(ManifestError, match=r"manifest\.toml: colour: Extra inputs"):
        read_manifest(folder / "manifest.toml")


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "digits", "1")
    manifest = folder / "manifest.toml"
    manifest.write_text(manifest.read_text().replace("digits-cnn", "gpt-9"), encoding="utf-8")
    with pytest.raises(ManifestError, match="unknown kind 'gpt-9'"):
        read_manifest(manifest)


def test_a_manifest_in_the_wrong_folder_is_refused(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "digits", "1")
    moved = tmp_path / "digits" / "2"
    folder.rename(moved)
    with pytest.raises(ManifestError, match="declares digits/1 but lies in digits/2"):
        read_manifest(moved / "manifest.toml")


def test_broken_toml_is_refused(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "digits", "1")
    (folder / "manifest.toml").write_text("name = [unclosed", encoding="utf-8")
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        read_manifest(folder / "manifest.toml")


def test_a_bad_folder_never_stops_the_others(tmp_path: Path) -> None:
    write_model(tmp_path, "digits", "1")
    broken = write_model(tmp_path, "digits", "2")
    (broken / "model.safetensors").write_bytes(b"tampered")
    write_model(tmp_path, "other", "1", extra="surprise = 1")
    found, problems = scan(tmp_path)
    assert [folder.key for folder in found] == [("digits", "1")]
    assert sorted(problem.folder.name for problem in problems) == ["1", "2"]
    assert any("sha256" in str(problem.error) for problem in problems)
    assert any("surprise" in str(problem.error) for problem in problems)


def test_scan_can_narrow_to_some_models(tmp_path: Path) -> None:
    write_model(tmp_path, "digits", "1")
    write_model(tmp_path, "other", "1")
    found, _ = scan(tmp_path, only=["other"])
    assert [folder.key for folder in found] == [("other", "1")]


def test_a_missing_repository_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    found, problems = scan(tmp_path / "nowhere")
    assert found == []
    assert "not a folder" in str(problems[0].error)


def test_the_default_version_is_the_alias_else_the_newest(tmp_path: Path) -> None:
    for version in ("2", "10", "9"):
        write_model(tmp_path, "digits", version)
    found, _ = scan(tmp_path)
    newest = default_version(found, "digits")
    assert newest is not None
    assert newest.manifest.version == "10"
    write_model(tmp_path, "digits", "3", extra='aliases = ["default"]')
    found, _ = scan(tmp_path)
    pinned = default_version(found, "digits")
    assert pinned is not None
    assert pinned.manifest.version == "3"
    assert default_version(found, "absent") is None


def test_the_shipped_repository_scans_clean_and_matches_the_digits_metrics() -> None:
    import json

    from models.repository import SHIPPED_REPOSITORY

    found, problems = scan(SHIPPED_REPOSITORY)
    assert problems == []
    keys = {folder.key for folder in found}
    assert {("minilm", "0.1.0"), ("digits", "1")} <= keys
    digits = next(folder for folder in found if folder.key == ("digits", "1"))
    measured = json.loads(digits.file("metrics.json").read_text(encoding="utf-8"))["test"]
    assert digits.manifest.metrics["accuracy"] == measured["accuracy"]
    assert digits.manifest.metrics["macro_f1"] == measured["macro_f1"]


def test_kinfer_models_lists_good_folders_and_names_the_bad_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from streams.cli import main

    write_model(tmp_path, "digits", "1")
    broken = write_model(tmp_path, "digits", "2")
    (broken / "model.safetensors").write_bytes(b"tampered")
    result = CliRunner().invoke(main, ["models", "--repository", str(tmp_path)])
    assert result.exit_code == 1
    assert (
        "digits 1 (default): digits-cnn, image-classification, float32, batch [1, 4, 16]: valid"
        in (result.output)
    )
    assert "failed: sha256" in result.output
    assert "digits/2/model.safetensors" in result.output
