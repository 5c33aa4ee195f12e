"""Worker processes: the accelerator's environment and the supervisor (no broker, no JAX).

The supervisor's children here are small Python programs: one that records the SIGTERM it gets
and exits 0, one that exits by itself, one that ignores SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams import cli
from streams.processes import (
    EXIT_CHILD_FAILED,
    EXIT_STOP_OVERRUN,
    PREALLOCATE_VAR,
    Supervisor,
    accelerator_env,
    apply_accelerator_env,
    child_envs,
    worker_command,
)
from streams.settings import Settings

pytestmark = pytest.mark.timeout(20)

REPO = Path(__file__).resolve().parents[2]

# -- the accelerator's environment ---------------------------------------------------------------


def test_preallocation_is_off_by_default_and_no_fraction_is_set() -> None:
    assert accelerator_env(None, {}) == {PREALLOCATE_VAR: "false"}


def test_a_preallocate_set_by_the_user_is_kept() -> None:
    assert accelerator_env(None, {PREALLOCATE_VAR: "true"}) == {}


def test_the_memory_fraction_is_set_only_when_given() -> None:
    assert accelerator_env(0.25, {}) == {
        PREALLOCATE_VAR: "false",
        "XLA_CLIENT_MEM_FRACTION": "0.25",
    }


@pytest.mark.parametrize("name", ["XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION"])
def test_a_fraction_set_by_the_user_wins_under_either_name(name: str) -> None:
    # jaxlib refuses to start with both names set, so kinfer adds neither
    assert accelerator_env(0.25, {name: "0.5", PREALLOCATE_VAR: "false"}) == {}


def test_apply_sets_the_variables_in_the_given_environment() -> None:
    environ = {"PATH": "/bin"}
    changes = apply_accelerator_env(Settings(gpu_memory_fraction=0.2), environ)
    assert changes == {PREALLOCATE_VAR: "false", "XLA_CLIENT_MEM_FRACTION": "0.2"}
    assert environ == {"PATH": "/bin", **changes}


def test_gpu_memory_fraction_setting_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KINFER_GPU_MEMORY_FRACTION", "0.3")
    monkeypatch.setenv("KINFER_PROCESSES", "4")
    settings = Settings()
    assert settings.gpu_memory_fraction == 0.3
    assert settings.processes == 4
    with pytest.raises(ValueError, match="gpu_memory_fraction"):
        Settings(gpu_memory_fraction=1.5)


def test_child_envs_give_each_process_its_own_web_port() -> None:
    settings = Settings(web_port=7000, broker_url="kafka://10.0.0.1:9092", processes=3)
    envs = child_envs(settings, 3, base_env={"KINFER_WEB_PORT": "1", "KEEP": "me"})
    assert [env["KINFER_WEB_PORT"] for env in envs] == ["7000", "7001", "7002"]
    for env in envs:
        assert env["KINFER_PROCESSES"] == "1"  # a child never supervises children of its own
        assert env["KINFER_BROKER_URL"] == "kafka://10.0.0.1:9092"
        assert env["KEEP"] == "me"
        assert env[PREALLOCATE_VAR] == "false"


def test_child_envs_refuse_web_ports_past_65535() -> None:
    with pytest.raises(ValueError, match="65535"):
        child_envs(Settings(web_port=65535), 2, base_env={})


def test_worker_command_is_this_python_running_the_cli() -> None:
    assert worker_command("warning") == [
        sys.executable,
        "-m",
        "streams.cli",
        "worker",
        "-l",
        "warning",
    ]


# -- the supervisor ------------------------------------------------------------------------------


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def _records_sigterm(marker: Path) -> list[str]:
    """A child that writes ``marker`` when it gets SIGTERM, then exits 0."""
    return _child(
        f"""
        import signal, sys, time
        def stop(*_):
            open({str(marker)!r}, "w").write("TERM")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        open({str(marker) + ".up"!r}, "w").write("up")
        time.sleep(60)
        """
    )


def _wait_for(paths: list[Path], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(path.exists() for path in paths):
        assert time.monotonic() < deadline, f"not all of {paths} appeared"
        time.sleep(0.02)


def _up(markers: list[Path]) -> list[Path]:
    return [marker.with_name(marker.name + ".up") for marker in markers]


def test_a_stop_request_reaches_every_child(tmp_path: Path) -> None:
    markers = [tmp_path / f"child-{i}" for i in range(3)]
    supervisor = Supervisor(
        [_records_sigterm(marker) for marker in markers], [dict(os.environ)] * 3, stop_timeout_s=5
    )
    supervisor.start()
    try:
        _wait_for(_up(markers))
        supervisor.request_stop()
        assert supervisor.wait() == 0
    finally:
        for child in supervisor.children:
            if child.poll() is None:
                child.kill()
    assert all(marker.read_text() == "TERM" for marker in markers)


def test_one_child_dying_stops_the_others_and_fails(tmp_path: Path) -> None:
    markers = [tmp_path / f"child-{i}" for i in range(2)]
    dies = _child("import time, sys; time.sleep(0.5); sys.exit(3)")
    supervisor = Supervisor(
        [_records_sigterm(markers[0]), dies, _records_sigterm(markers[1])],
        [dict(os.environ)] * 3,
        stop_timeout_s=5,
    )
    supervisor.start()
    started = time.monotonic()
    assert supervisor.wait() == 3
    assert time.monotonic() - started < 5
    assert all(marker.read_text() == "TERM" for marker in markers)
    assert all(child.poll() is not None for child in supervisor.children)


def test_a_child_exiting_0_unasked_is_a_failure_too(tmp_path: Path) -> None:
    marker = tmp_path / "child"
    supervisor = Supervisor(
        [_records_sigterm(marker), _child("import time; time.sleep(0.3)")],
        [dict(os.environ)] * 2,
        stop_timeout_s=5,
    )
    supervisor.start()
    assert supervisor.wait() == EXIT_CHILD_FAILED
    assert marker.read_text() == "TERM"


def test_a_child_killed_by_a_signal_is_reported_as_128_plus_the_signal() -> None:
    supervisor = Supervisor(
        [_child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")],
        [dict(os.environ)],
        stop_timeout_s=5,
    )
    supervisor.start()
    assert supervisor.wait() == 128 + signal.SIGKILL


def test_a_child_that_ignores_sigterm_is_killed_after_the_bound(tmp_path: Path) -> None:
    up = tmp_path / "up"
    stubborn = _child(
        f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(up)!r}, "w").write("up")
        time.sleep(60)
        """
    )
    supervisor = Supervisor([stubborn], [dict(os.environ)], stop_timeout_s=0.5)
    supervisor.start()
    _wait_for([up])
    supervisor.request_stop()
    started = time.monotonic()
    assert supervisor.wait() == EXIT_STOP_OVERRUN
    assert time.monotonic() - started < 3
    assert supervisor.children[0].returncode == -signal.SIGKILL


def _supervisor_process(tmp_path: Path, markers: list[Path]) -> subprocess.Popen[bytes]:
    """A real supervisor process (its own signal handlers) over children that record SIGTERM."""
    commands = [_records_sigterm(marker) for marker in markers]
    program = textwrap.dedent(
        f"""
        import os, sys
        from streams.processes import Supervisor
        commands = {commands!r}
        sys.exit(Supervisor(commands, [dict(os.environ)] * len(commands), stop_timeout_s=5).run())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", program], env=env, cwd=tmp_path)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_supervisor_process_reaches_every_child(
    tmp_path: Path, signum: signal.Signals
) -> None:
    markers = [tmp_path / f"child-{i}" for i in range(3)]
    proc = _supervisor_process(tmp_path, markers)
    try:
        _wait_for(_up(markers))
        proc.send_signal(signum)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert all(marker.read_text() == "TERM" for marker in markers)


def test_children_of_a_killed_supervisor_get_sigterm(tmp_path: Path) -> None:
    # Linux with setpriv only: the kernel's parent-death signal
    import shutil

    if shutil.which("setpriv") is None or not sys.platform.startswith("linux"):
        pytest.skip("needs Linux and util-linux's setpriv")
    markers = [tmp_path / f"child-{i}" for i in range(2)]
    proc = _supervisor_process(tmp_path, markers)
    _wait_for(_up(markers))
    proc.kill()
    proc.wait(5)
    _wait_for(markers, timeout_s=5)
    assert all(marker.read_text() == "TERM" for marker in markers)


# -- the command line ----------------------------------------------------------------------------


def test_worker_with_one_process_runs_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(cli, "_run_worker", lambda settings, loglevel: calls.append("in"))
    monkeypatch.setattr(cli, "_supervise_workers", lambda settings, loglevel: calls.append("sup"))
    result = CliRunner().invoke(cli.main, ["worker", "--processes", "1"])
    assert result.exit_code == 0, result.output
    assert calls == ["in"]


def test_worker_with_several_processes_supervises(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def supervise(settings: Settings, loglevel: str) -> int:
        seen.append(settings.processes)
        return 3

    monkeypatch.setattr(cli, "_supervise_workers", supervise)
    monkeypatch.setenv("KINFER_PROCESSES", "4")
    result = CliRunner().invoke(cli.main, ["worker"])
    assert seen == [4]
    assert result.exit_code == 3


def test_worker_help_explains_processes_and_the_gpu() -> None:
    result = CliRunner().invoke(cli.main, ["worker", "--help"])
    assert result.exit_code == 0
    for needle in ("--processes", "GPU", "XLA_PYTHON_CLIENT_PREALLOCATE", "KINFER_GPU_MEMORY"):
        assert needle in result.output
