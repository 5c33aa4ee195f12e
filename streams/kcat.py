"""Make Debian's `kcat` talk to Tansu.

Debian's kcat links Debian's librdkafka 2.0.2, whose ApiVersions handshake fails against Tansu
("ApiVersionRequest failed: Local: Read underflow"). The same kcat works when it loads the
librdkafka 2.16 bundled in the confluent-kafka wheel: `kcat_env()` makes a folder holding a link
`librdkafka.so.1` to that library and puts it first in `LD_LIBRARY_PATH`. Against Apache Kafka,
Debian's kcat works as it is.

    env = kcat_env(Path("/tmp/kinfer-kcat"))
    subprocess.run([str(find_kcat()), "-b", bootstrap, "-L"], env=env, check=True)

TLS and SASL (``streams.security``): `run_kcat(..., security=...)` and `kinfer kcat` hand kcat
the librdkafka properties of `KafkaSecurity.librdkafka()` as ``-F /dev/fd/N``, a pipe that holds
the configuration: the password is neither on kcat's command line (``ps`` shows that) nor in a
file on disk.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from streams.security import PLAINTEXT, KafkaSecurity, SecurityError

__all__ = [
    "KcatNotFoundError",
    "LibrdkafkaNotFoundError",
    "bundled_librdkafka",
    "config_pipe",
    "find_kcat",
    "kcat_env",
    "require_kcat",
    "run_kcat",
    "security_args",
]

LIB_NAME = "librdkafka.so.1"


class KcatNotFoundError(FileNotFoundError):
    """No `kcat` (or `kafkacat`) executable on PATH."""

    def __init__(self) -> None:
        super().__init__("kcat is not installed (Debian/Ubuntu: apt-get install -y kcat)")


class LibrdkafkaNotFoundError(FileNotFoundError):
    """The confluent-kafka wheel's bundled librdkafka could not be found."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"no bundled librdkafka-*.so.1 found ({where}); install the confluent-kafka wheel"
            " (pip install 'confluent-kafka==2.16.1')"
        )


def find_kcat() -> Path | None:
    """Path of `kcat` (or its old name `kafkacat`) on PATH, or None."""
    for name in ("kcat", "kafkacat"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def require_kcat() -> Path:
    """Path of `kcat`; raises `KcatNotFoundError` if it is not installed."""
    found = find_kcat()
    if found is None:
        raise KcatNotFoundError
    return found


def bundled_librdkafka(libs_dir: Path | None = None) -> Path:
    """The librdkafka shipped in the confluent-kafka wheel (`confluent_kafka.libs/`).

    Found without importing confluent_kafka. `libs_dir` overrides the folder searched.
    """
    if libs_dir is None:
        spec = importlib.util.find_spec("confluent_kafka")
        if spec is None or spec.origin is None:
            raise LibrdkafkaNotFoundError("confluent_kafka is not installed")
        libs_dir = Path(spec.origin).parent.parent / "confluent_kafka.libs"
    candidates = sorted(libs_dir.glob("librdkafka*.so.1"))
    if not candidates:
        raise LibrdkafkaNotFoundError(f"nothing matches {libs_dir}/librdkafka*.so.1")
    return candidates[0].resolve()


def kcat_env(
    workdir: Path,
    *,
    base_env: Mapping[str, str] | None = None,
    library: Path | None = None,
) -> dict[str, str]:
    """Create `workdir/lib/librdkafka.so.1` -> the wheel's librdkafka; return an env for kcat.

    The returned env is `base_env` (default: `os.environ`) with `workdir/lib` put first in
    `LD_LIBRARY_PATH`. Idempotent: an existing link is replaced atomically.
    """
    target = library if library is not None else bundled_librdkafka()
    if not target.is_file():
        raise LibrdkafkaNotFoundError(f"{target} is not a file")
    lib_dir = (workdir / "lib").resolve()
    lib_dir.mkdir(parents=True, exist_ok=True)
    link = lib_dir / LIB_NAME
    if not (link.is_symlink() and link.resolve() == target.resolve()):
        tmp = lib_dir / f".{LIB_NAME}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(link)
    env = dict(os.environ if base_env is None else base_env)
    previous = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(lib_dir), *previous])
    return env


def config_pipe(config: Mapping[str, str]) -> int:
    """The read end of a pipe holding ``config`` as kcat's ``-F`` file (``property=value`` lines).

    The caller hands ``/dev/fd/N`` to kcat (keeping the descriptor open in the child) and then
    closes it. Raises `SecurityError` for a value kcat's file format cannot carry (a newline).
    """
    lines = []
    for key, value in config.items():
        if "\n" in value or "\r" in value or "\n" in key:
            raise SecurityError(f"the kcat property {key!r} cannot hold a line break")
        lines.append(f"{key}={value}\n")
    data = "".join(lines).encode()
    if len(data) > 60_000:  # a pipe holds 64 KiB without a reader
        raise SecurityError("the kcat configuration is too large for a pipe")
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


def security_args(security: KafkaSecurity) -> tuple[list[str], int | None]:
    """kcat arguments for ``security`` and the pipe they read (None for PLAINTEXT)."""
    if security == PLAINTEXT:
        return [], None
    fd = config_pipe(security.librdkafka())
    return ["-F", f"/dev/fd/{fd}"], fd


def run_kcat(
    bootstrap: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    input: bytes | None = None,
    timeout_s: float = 30.0,
    security: KafkaSecurity = PLAINTEXT,
) -> subprocess.CompletedProcess[bytes]:
    """Run `kcat -b bootstrap ARGS` with `env` (from `kcat_env`); raise on a non-zero exit.

    ``security`` (TLS, SASL) reaches kcat through a ``-F`` pipe (see `config_pipe`).
    Raises `KcatNotFoundError`, `subprocess.TimeoutExpired`, or `subprocess.CalledProcessError`
    (its `stderr` holds kcat's message).
    """
    extra, fd = security_args(security)
    cmd = [str(require_kcat()), *extra, "-b", bootstrap, *args]
    try:
        return subprocess.run(
            cmd,
            input=input,
            env=dict(env),
            capture_output=True,
            timeout=timeout_s,
            check=True,
            pass_fds=() if fd is None else (fd,),
        )
    finally:
        if fd is not None:
            os.close(fd)
