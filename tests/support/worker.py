"""A kinfer worker in its own process, for broker-tier tests, chaos runs and benchmarks.

``WorkerProcess`` runs ``python -m streams.cli worker`` with the settings given as ``KINFER_*``
environment variables, waits for ``/ready``, and can stop it by SIGTERM or kill -9 (its own PID
only). Small default buckets keep warm-up short in tests.
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from streams.broker import free_port

#: where workers without an explicit ``log_path`` write their logs (the system temp dir if None);
#: the test session points it at pytest's own temp dir, which pytest prunes
LOG_DIR: Path | None = None

TEST_SETTINGS: dict[str, str] = {
    # one model version: every extra version costs its own warm-up
    "KINFER_MODELS": "minilm:0.1.0",
    "KINFER_BATCH_BUCKETS": "1,8,32",
    "KINFER_SEQ_BUCKETS": "32,128",
    "KINFER_MAX_BATCH": "32",
    "KINFER_MAX_WAIT_MS": "5",
}


class WorkerProcess:
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
        self._own_log = log_path is None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="kinfer-worker-", suffix=".log", dir=LOG_DIR)
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: bool = True) -> Self:
        """Start the worker; with ``wait``, return once ``/ready`` answers 200."""
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *self.command, "-l", "info"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.kill9()
                self.close()
                raise
        return self

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

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

    def kill9(self) -> None:
        """kill -9: no shutdown at all, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (kills -9 after ``timeout_s``)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()
        return int(self.proc.returncode)

    def log_tail(self, chars: int = 4000) -> str:
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
        if self.proc is not None and self.proc.poll() is None:
            self.terminate(15)
        self.close()
        if exc_type is None and self._own_log:  # kept after a failure, for its story
            self.log_path.unlink(missing_ok=True)
