"""``kinfer gateway`` in its own process, for broker-tier tests and benchmarks.

``GatewayServer`` runs ``python -m streams.cli gateway`` on free ports with the settings given
as ``KINFER_*`` environment variables, waits until ``/v2/health/ready`` (or only
``/v2/health/live``) answers 200, and stops it by SIGTERM (its own PID only). Its log goes to
a temporary file, kept when a test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from streams.broker import free_port
from tests.support import worker


class GatewayServer:
    """One gateway process on free HTTP and gRPC ports of 127.0.0.1."""

    def __init__(
        self,
        bootstrap: str,
        settings: Mapping[str, str] | None = None,
        *,
        wait_for: str = "ready",
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port()
        env = dict(os.environ)
        for name, value in (settings or {}).items():
            key = name if name.startswith("KINFER_") else f"KINFER_{name.upper()}"
            env[key] = str(value)
        env["KINFER_BROKER_URL"] = f"kafka://{bootstrap}"
        env["KINFER_GATEWAY_HTTP_PORT"] = str(self.http_port)
        env["KINFER_GATEWAY_GRPC_PORT"] = str(self.grpc_port)
        self.env = env
        self.wait_for = wait_for
        self.ready_timeout_s = ready_timeout_s
        fd, name = tempfile.mkstemp(prefix="kinfer-gateway-", suffix=".log", dir=worker.LOG_DIR)
        os.close(fd)
        self.log_path = Path(name)
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        """``host:port`` of the HTTP server."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        """``host:port`` of the gRPC server."""
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> Self:
        """Start it and wait for ``/v2/health/<wait_for>``."""
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "gateway", "-l", "info"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._answers(f"/v2/health/{self.wait_for}"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"gateway not {self.wait_for} in time:\n{self.log()}")
            time.sleep(0.1)
        return self

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http}{path}", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout_s``); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def log(self, chars: int = 4000) -> str:
        """The end of its log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self.log_path.unlink(missing_ok=True)
