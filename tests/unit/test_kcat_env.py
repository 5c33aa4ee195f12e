"""The env/link logic of `streams.kcat` (no kcat, no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.kcat import LibrdkafkaNotFoundError, bundled_librdkafka, kcat_env


@pytest.fixture
def fake_libs(tmp_path: Path) -> Path:
    libs = tmp_path / "site-packages" / "confluent_kafka.libs"
    libs.mkdir(parents=True)
    (libs / "librdkafka-0123abcd.so.1").write_bytes(b"\x7fELF")
    return libs


def test_bundled_librdkafka_found_in_libs_dir(fake_libs: Path) -> None:
    assert bundled_librdkafka(fake_libs) == (fake_libs / "librdkafka-0123abcd.so.1").resolve()


def test_bundled_librdkafka_missing_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(LibrdkafkaNotFoundError, match="confluent-kafka"):
        bundled_librdkafka(tmp_path)


def test_kcat_env_makes_link_and_prepends_path(tmp_path: Path, fake_libs: Path) -> None:
    lib = bundled_librdkafka(fake_libs)
    env = kcat_env(
        tmp_path / "work", base_env={"LD_LIBRARY_PATH": "/opt/a:/opt/b", "X": "1"}, library=lib
    )
    lib_dir = (tmp_path / "work" / "lib").resolve()
    assert env["LD_LIBRARY_PATH"] == f"{lib_dir}:/opt/a:/opt/b"
    assert env["X"] == "1"
    assert (lib_dir / "librdkafka.so.1").is_symlink()
    assert (lib_dir / "librdkafka.so.1").resolve() == lib


def test_kcat_env_is_idempotent_and_repoints(tmp_path: Path, fake_libs: Path) -> None:
    first = fake_libs / "librdkafka-0123abcd.so.1"
    second = fake_libs / "librdkafka-ffff0000.so.1"
    second.write_bytes(b"\x7fELF")
    workdir = tmp_path / "work"
    kcat_env(workdir, base_env={}, library=first)
    kcat_env(workdir, base_env={}, library=first)
    env = kcat_env(workdir, base_env={}, library=second)
    assert (workdir / "lib" / "librdkafka.so.1").resolve() == second.resolve()
    assert env["LD_LIBRARY_PATH"] == str((workdir / "lib").resolve())
    assert [p.name for p in (workdir / "lib").iterdir()] == ["librdkafka.so.1"]


def test_kcat_env_rejects_a_missing_library(tmp_path: Path) -> None:
    with pytest.raises(LibrdkafkaNotFoundError):
        kcat_env(tmp_path, base_env={}, library=tmp_path / "nope.so.1")


def test_kcat_env_with_the_real_wheel(tmp_path: Path) -> None:
    pytest.importorskip("confluent_kafka")
    env = kcat_env(tmp_path)
    link = Path(env["LD_LIBRARY_PATH"].split(":")[0]) / "librdkafka.so.1"
    assert link.resolve().is_file()
