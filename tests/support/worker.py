"""A kinfer worker in its own process, for broker-tier tests, chaos runs and benchmarks.

``WorkerProcess`` runs ``python -m streams.cli worker`` with the settings given as ``KINFER_*``
environment variables, waits for ``/ready``, and can stop it by SIGTERM or kill -9 (its own PID
only). Small default buckets keep warm-up short in tests.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from streams.broker import free_port
from tests.support.child import ChildProcess

TEST_SETTINGS: dict[str, str] = {
    # one model version: every extra version costs its own warm-up
    "KINFER_MODELS": "minilm:0.1.0",
    "KINFER_BATCH_BUCKETS": "1,8,32",
    "KINFER_SEQ_BUCKETS": "32,128",
    "KINFER_MAX_BATCH": "32",
    "KINFER_MAX_WAIT_MS": "5",
}


class WorkerProcess(ChildProcess):
    """One worker process; ``settings`` are KINFER_* env names without the prefix, or with."""

    def __init__(
        self,
        bootstrap: str,
        settings: Mapping[str, str] | None = None,
        *,
        log_path: Path | None = None,
        ready_timeout_s: float = 120.0,
        command: Sequence[str] = ("worker",),
    ) -> None:
        """``command``: the ``kinfer`` subcommand and its arguments (``enrich --source ...``)."""
        super().__init__(log_path, log_prefix="kinfer-worker-")
        self.command = tuple(command)
        self.web_port = free_port()
        env = dict(os.environ)
        env.update(TEST_SETTINGS)
        for name, value in (settings or {}).items():
            key = name if name.startswith("KINFER_") else f"KINFER_{name.upper()}"
            env[key] = str(value)
        env["KINFER_BROKER_URL"] = f"kafka://{bootstrap}"
        env["KINFER_WEB_PORT"] = str(self.web_port)
        env.setdefault("JAX_PLATFORMS", "cpu")
        self.env = env
        self.ready_timeout_s = ready_timeout_s

    def start(self, wait: bool = True) -> Self:
        """Start the worker; with ``wait``, return once ``/ready`` answers 200."""
        self.spawn([sys.executable, "-m", "streams.cli", *self.command, "-l", "info"], self.env)
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.kill9()
                self.close()
                raise
        return self

    def is_ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.web_port}/ready"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {self.ready_timeout_s}s:\n{self.log_tail()}")
