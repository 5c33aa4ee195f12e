"""``kinfer gateway`` in its own process, for broker-tier tests and benchmarks.

``GatewayServer`` runs ``python -m streams.cli gateway`` on free ports with the settings given
as ``KINFER_*`` environment variables, waits until ``/v2/health/ready`` (or only
``/v2/health/live``) answers 200, and stops it by SIGTERM (its own PID only). Its log goes to
a temporary file, kept when a test fails.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Self

from streams.broker import free_port
from tests.support.child import ChildProcess


class GatewayServer(ChildProcess):
    """One gateway process on free HTTP and gRPC ports of 127.0.0.1."""

    def __init__(
        self,
        bootstrap: str,
        settings: Mapping[str, str] | None = None,
        *,
        wait_for: str = "ready",
        ready_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(log_prefix="kinfer-gateway-")
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
        self.spawn([sys.executable, "-m", "streams.cli", "gateway", "-l", "info"], self.env)
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._answers(f"/v2/health/{self.wait_for}"):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"gateway not {self.wait_for} in time:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http}{path}", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM and wait (kill -9 after ``timeout_s``); the exit code."""
        if self.proc is None:
            return None
        code = self.terminate(timeout_s)
        self.close()
        return code
