"""``kinfer gateway`` as a child process of ``kinfer run``, and the example it prints."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import orjson

from streams.broker import _stopping_with_parent

__all__ = ["GatewayProcess", "gateway_example"]


class GatewayProcess:
    """``python -m streams.cli gateway`` on the given ports, stopped with its parent.

    It inherits the environment (the broker URL, the topics) and the terminal, so its log
    lines and start-up errors (a port in use) show where ``kinfer run`` prints. The kernel
    sends it SIGTERM if its parent dies without stopping it (Linux ``setpriv``).
    """

    def __init__(self, http_port: int, grpc_port: int, loglevel: str = "info") -> None:
        self.command = _stopping_with_parent(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "gateway",
                "--http-port",
                str(http_port),
                "--grpc-port",
                str(grpc_port),
                "--loglevel",
                loglevel,
            ]
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (without waiting for it to be ready)."""
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; its exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def gateway_example(host: str, http_port: int, grpc_port: int) -> str:
    """How to call the gateway with curl and tritonclient, for ``kinfer run`` to print."""
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Kafka meets JAX"]}
            ]
        }
    ).decode()
    base = f"http://{host}:{http_port}"
    return f"""
The Open Inference Protocol gateway: HTTP on {base}, gRPC on {host}:{grpc_port}.
  curl -s {base}/v2/health/ready
  curl -s {base}/v2/models/minilm
  curl -s {base}/v2/models/minilm/infer -d {shlex.quote(body)}
or with NVIDIA's tritonclient (pip install 'tritonclient[http,grpc]'), README "HTTP and gRPC".
Ctrl-C stops the gateway too.
"""
