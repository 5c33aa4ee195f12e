"""Worker processes on one host: the accelerator's environment, and a supervisor for several.

Why several: one worker process moves a few thousand messages a second (decode, tokenise,
encode, Kafka I/O all run in one Python process), while one GPU embeds hundreds of thousands of
sentences a second. Several processes in one consumer group, each with its own JAX client on
the same GPU, are how one host keeps its GPU busy: ``kinfer worker --processes N``.

**The accelerator's environment** (``apply_accelerator_env``) is set in every worker process
before JAX starts its backend: by default JAX preallocates 75 % of the GPU's memory in each
process, so a second process on the same GPU runs out of memory. kinfer sets
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (JAX then takes memory as it needs it) unless the user
set that variable, and ``XLA_CLIENT_MEM_FRACTION`` (a cap on each process's share of the device
memory) from ``KINFER_GPU_MEMORY_FRACTION`` only when that is given and neither XLA name is set
already (jaxlib refuses to start with both the current and the deprecated name).

**The supervisor** (``Supervisor``) starts N child workers, each ``python -m streams.cli worker``
with ``KINFER_WEB_PORT`` = web_port + i and ``KINFER_PROCESSES=1``, and then only watches them.
Each child serves its own ``/live``, ``/ready`` and ``/metrics`` on its port: Prometheus scrapes
every child as a target of its own (its metrics are its process's, with no multiprocess
aggregation), and sums across them in queries. Its rules are few, so that they are predictable:

- SIGTERM or SIGINT to the supervisor sends SIGTERM to every child once (each then stops
  gracefully: it answers what it started and commits); the supervisor waits for them all, at most
  ``stop_timeout_s``, then kills what is left (SIGKILL) and exits 70. Repeated signals change
  nothing. It exits 0 when every child exited 0, else with the first non-zero code.
- A child that exits when no stop was asked for (a crash, an OOM kill, any code, 0 included) is
  logged, the others are stopped as above, and the supervisor exits non-zero: the child's code,
  128 + the signal for a child killed by a signal, 1 for a child that exited 0. Nothing is
  restarted: the service manager (systemd, Kubernetes) that restarts a failed ``kinfer worker``
  restarts the whole group, and what the dead child had not committed is delivered again to the
  group's other members meanwhile.
- Children run in their own process session, so a terminal's Ctrl-C reaches only the
  supervisor (which forwards one SIGTERM), and on Linux they get SIGTERM from the kernel if the
  supervisor dies without stopping them (``setpriv --pdeathsig``), so none is left orphaned.

This module imports neither Faust nor JAX.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, MutableMapping, Sequence
from types import FrameType

from streams.broker import _stopping_with_parent
from streams.settings import Settings

__all__ = [
    "EXIT_CHILD_FAILED",
    "EXIT_STOP_OVERRUN",
    "MEM_FRACTION_VARS",
    "PREALLOCATE_VAR",
    "Supervisor",
    "accelerator_env",
    "apply_accelerator_env",
    "child_envs",
    "worker_command",
]

log = logging.getLogger(__name__)

#: JAX's switch for preallocating device memory at start-up (read when its GPU client starts).
PREALLOCATE_VAR = "XLA_PYTHON_CLIENT_PREALLOCATE"
#: The current and the deprecated name of JAX's per-process device memory fraction.
MEM_FRACTION_VARS = ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")
#: Exit code of a supervisor whose children did not all stop within its bound (as streams.app).
EXIT_STOP_OVERRUN = 70
#: Exit code of a supervisor whose child exited with 0 although no stop was asked for.
EXIT_CHILD_FAILED = 1


def accelerator_env(memory_fraction: float | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The XLA variables kinfer adds to ``environ``: only those the user has not set."""
    changes: dict[str, str] = {}
    if PREALLOCATE_VAR not in environ:
        changes[PREALLOCATE_VAR] = "false"
    if memory_fraction is not None and not any(name in environ for name in MEM_FRACTION_VARS):
        changes[MEM_FRACTION_VARS[0]] = f"{memory_fraction:g}"
    return changes


def apply_accelerator_env(
    settings: Settings, environ: MutableMapping[str, str] | None = None
) -> dict[str, str]:
    """Set the accelerator's variables in ``environ`` (default: this process's); returns them.

    Call before JAX starts its backend (in practice: before ``import jax``).
    """
    target = os.environ if environ is None else environ
    changes = accelerator_env(settings.gpu_memory_fraction, target)
    target.update(changes)
    return changes


def worker_command(loglevel: str = "info") -> list[str]:
    """The command line of one child worker (this Python, this kinfer)."""
    return [sys.executable, "-m", "streams.cli", "worker", "-l", loglevel]


def child_envs(
    settings: Settings, count: int, base_env: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """The environment of each of ``count`` children: its own web port, one process each.

    The settings that the command line overrode (broker URL, web port) travel as ``KINFER_*``
    variables; the accelerator's variables are set here too, as each child would set them.
    """
    if settings.web_port + count - 1 > 65535:
        raise ValueError(
            f"web ports {settings.web_port}..{settings.web_port + count - 1} go past 65535 "
            "(lower KINFER_WEB_PORT or the number of processes)"
        )
    base = dict(os.environ if base_env is None else base_env)
    base["KINFER_BROKER_URL"] = settings.broker_url
    base["KINFER_PROCESSES"] = "1"
    base.update(accelerator_env(settings.gpu_memory_fraction, base))
    return [{**base, "KINFER_WEB_PORT": str(settings.web_port + index)} for index in range(count)]


def _exit_code(returncode: int) -> int:
    """A child's return code as a shell would report it (a signal n as 128 + n)."""
    return 128 - returncode if returncode < 0 else returncode


class Supervisor:
    """Start child processes and watch them; see the module's docstring for the rules.

    ``commands[i]`` runs with ``envs[i]``. ``run()`` does everything and is what the CLI calls
    (it must run on the main thread: it installs the SIGTERM and SIGINT handlers);
    ``start()``, ``request_stop()`` and ``wait()`` are its parts.
    """

    def __init__(
        self,
        commands: Sequence[Sequence[str]],
        envs: Sequence[Mapping[str, str]],
        *,
        stop_timeout_s: float,
        poll_s: float = 0.1,
        stop_with_parent: bool = True,
    ) -> None:
        if len(commands) != len(envs) or not commands:
            raise ValueError("need one environment per command, and at least one command")
        self.commands = [list(command) for command in commands]
        self.envs = [dict(env) for env in envs]
        self.stop_timeout_s = stop_timeout_s
        self.poll_s = poll_s
        self.stop_with_parent = stop_with_parent
        self.children: list[subprocess.Popen[bytes]] = []
        self._stop_asked = False

    @property
    def pids(self) -> list[int]:
        """PIDs of the children started so far."""
        return [child.pid for child in self.children]

    def start(self) -> None:
        """Start every child (in its own session; SIGTERM to it when this process dies)."""
        for index, (command, env) in enumerate(zip(self.commands, self.envs, strict=True)):
            argv = _stopping_with_parent(command) if self.stop_with_parent else command
            child = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True
            )
            self.children.append(child)
            log.info("worker process %d started (pid %d)", index, child.pid)

    def request_stop(self, *_: object) -> None:
        """Ask for a graceful stop (safe from a signal handler); acted on by ``wait()``."""
        self._stop_asked = True

    def wait(self) -> int:
        """Watch the children until they have all exited; returns the supervisor's exit code."""
        failed: int | None = None
        while failed is None and not self._stop_asked:
            for index, child in enumerate(self.children):
                code = child.poll()
                if code is not None:
                    log.error(
                        "worker process %d (pid %d) exited with code %d: stopping the other %d",
                        index,
                        child.pid,
                        code,
                        len(self.children) - 1,
                    )
                    failed = _exit_code(code) or EXIT_CHILD_FAILED
                    break
            else:
                time.sleep(self.poll_s)
        stopped = self._stop_children()
        if failed is not None:
            return failed
        if stopped is None:
            return EXIT_STOP_OVERRUN
        return next((_exit_code(code) for code in stopped if code != 0), 0)

    def _stop_children(self) -> list[int] | None:
        """SIGTERM each running child, wait ``stop_timeout_s``; None if some had to be killed."""
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        while any(child.poll() is None for child in self.children):
            if time.monotonic() >= deadline:
                running = [child for child in self.children if child.poll() is None]
                log.error(
                    "%d worker process(es) still running %.1fs after SIGTERM: killing them",
                    len(running),
                    self.stop_timeout_s,
                )
                for child in running:
                    child.kill()
                    child.wait()
                return None
            time.sleep(self.poll_s)
        return [int(child.returncode) for child in self.children]

    def run(self) -> int:
        """Start the children, forward SIGTERM/SIGINT to them, and wait; the exit code."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.start()
            return self.wait()
        finally:
            if any(child.poll() is None for child in self.children):  # start() raised
                self._stop_children()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stop_asked:
            log.info(
                "%s: stopping %d worker processes", signal.Signals(signum).name, len(self.children)
            )
        self.request_stop()
