"""A test's child process: started in its own session, logging to a file, ended by its own PID.

The base of `WorkerProcess`, `GatewayServer` and `TlsFront`. A subclass builds its command and
calls :meth:`ChildProcess.spawn` from its ``start``; leaving the ``with`` block stops it by
SIGTERM (kill -9 after a bound). A log file it made itself is removed after a clean exit, and
kept when the block raised, for the failure's story.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = ["ChildProcess"]


class ChildProcess:
    """One child process and its log file."""

    #: where a child without an explicit log path writes its log (None: the system temp dir);
    #: the test session points it at pytest's own temp dir, which pytest prunes
    log_dir: Path | None = None
    #: SIGTERM's bound when the ``with`` block ends
    exit_timeout_s: float = 15.0

    def __init__(self, log_path: Path | None = None, *, log_prefix: str = "kinfer-") -> None:
        self._own_log = log_path is None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix=log_prefix, suffix=".log", dir=self.log_dir)
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start the process (and wait until it serves, as the subclass defines)."""
        raise NotImplementedError

    def spawn(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        """Run ``argv`` in a session of its own, its output appended to the log."""
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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

    def close(self) -> None:
        """Close the log file (the process, if still running, keeps its own handle)."""
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 4000) -> str:
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
        if self.running():
            self.terminate(self.exit_timeout_s)
        self.close()
        if exc_type is None and self._own_log:
            self.log_path.unlink(missing_ok=True)
