"""Several hosts, one consumer group: the broker and two worker "hosts" in network namespaces.

Three namespaces made by this test (iproute2): the broker's, holding a bridge at 10.77.12.1, and
two hosts, 10.77.12.11 and 10.77.12.12, each joined to the bridge by a veth pair. Every address
lives inside these namespaces only; nothing is added to the machine's own network. A worker
runs in each host; the load driver (tests/support/netns_driver.py) runs in the broker's.

Load spreads over both hosts (each host's link carries answers); then the first host's link goes
down. Its partitions move to the other host once the broker expires its session, and every
request is answered: 0 lost. Duplicates are allowed (at-least-once), and counted.

Skips, saying why, where namespaces cannot be made (not root, no CAP_SYS_ADMIN, no iproute2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from streams.broker import _stopping_with_parent, tansu_binary
from tests.support.worker import TEST_SETTINGS

pytestmark = [pytest.mark.broker, pytest.mark.timeout(420)]

SUBNET = "10.77.12"
BROKER_IP = f"{SUBNET}.1"
HOST_IPS = {"h1": f"{SUBNET}.11", "h2": f"{SUBNET}.12"}
PORT = 9092
WEB_PORT = 6066
PARTITIONS = 4
ROOT = Path(__file__).resolve().parents[2]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def _cannot_make_namespaces() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"kinfer-probe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"cannot make a network namespace: {exc.stderr.decode().strip()}"
    _ip("netns", "del", probe)
    return None


class Namespaces:
    """The broker's namespace with a bridge, and one namespace per host joined to it."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.broker = f"kfo-{tag}-b"
        self.hosts = {name: f"kfo-{tag}-{name}" for name in HOST_IPS}
        self.made: list[str] = []

    def __enter__(self) -> Namespaces:
        try:
            for ns in (self.broker, *self.hosts.values()):
                _ip("netns", "add", ns)
                self.made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.broker, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.broker, "addr", "add", f"{BROKER_IP}/24", "dev", "br0")
            _ip("-n", self.broker, "link", "set", "br0", "up")
            for name, ns in self.hosts.items():
                port = f"v{name}"
                _ip("-n", self.broker, "link", "add", port, "type", "veth", "peer", "name",
                    "eth0", "netns", ns)  # fmt: skip
                _ip("-n", self.broker, "link", "set", port, "master", "br0", "up")
                _ip("-n", ns, "addr", "add", f"{HOST_IPS[name]}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.made.clear()


class InNamespace:
    """A process of this test, run in a namespace (``ip netns exec``), its output to a file."""

    def __init__(self, ns: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log: IO[bytes] = log.open("ab")
        self.proc = subprocess.Popen(
            _stopping_with_parent(["ip", "netns", "exec", ns, *cmd]),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by its PID
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    reason = _cannot_make_namespaces()
    if reason is not None:
        pytest.skip(reason)
    with Namespaces() as made:
        yield made


def test_a_host_cut_off_hands_its_partitions_over_and_nothing_is_lost(
    namespaces: Namespaces, tmp_path: Path
) -> None:
    names = {
        "KINFER_APP_ID": f"fo-app-{uuid.uuid4().hex[:6]}",
        "KINFER_REQUEST_TOPIC": "fo.requests",
        "KINFER_RESPONSE_TOPIC": "fo.responses",
        "KINFER_PARTITIONS": str(PARTITIONS),
    }
    env = {**os.environ, **TEST_SETTINGS, **names, "JAX_PLATFORMS": "cpu"}
    env["KINFER_BROKER_URL"] = f"kafka://{BROKER_IP}:{PORT}"
    env["TMPDIR"] = tempfile.gettempdir()
    url = f"tcp://{BROKER_IP}:{PORT}"
    processes: list[InNamespace] = []
    try:
        broker = InNamespace(
            namespaces.broker,
            [str(tansu_binary()), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--silent"],
            env,
            tmp_path / "broker.log",
        )  # fmt: skip
        processes.append(broker)
        for name, ns in namespaces.hosts.items():
            worker_env = {
                **env,
                "KINFER_WEB_HOST": HOST_IPS[name],
                "KINFER_WEB_PORT": str(WEB_PORT),
            }
            processes.append(
                InNamespace(
                    ns,
                    [sys.executable, "-m", "streams.cli", "worker", "-l", "info"],
                    worker_env,
                    tmp_path / f"worker-{name}.log",
                )
            )
        hosts = ",".join(f"{ns}={HOST_IPS[n]}:{WEB_PORT}" for n, ns in namespaces.hosts.items())
        driver = subprocess.run(
            ["ip", "netns", "exec", namespaces.broker, sys.executable, "-m",
             "tests.support.netns_driver", "--bootstrap", f"{BROKER_IP}:{PORT}",
             "--hosts", hosts, "--cut", f"{namespaces.hosts['h1']}:eth0",
             "--request-topic", names["KINFER_REQUEST_TOPIC"],
             "--response-topic", names["KINFER_RESPONSE_TOPIC"],
             "--partitions", str(PARTITIONS)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            timeout=360,
        )  # fmt: skip
        logs = "\n".join(f"--- {p.log_path.name}\n{p.tail()}" for p in processes)
        assert driver.returncode == 0, driver.stderr.decode()[-4000:] + logs
        result = json.loads(driver.stdout.decode().strip().splitlines()[-1])
        print("failover:", json.dumps(result))
        assert "error" not in result, f"{result}\n{logs}"
    finally:
        for process in reversed(processes):
            process.stop()
    assert result["lost"] == 0, result
    assert result["answered"] == result["sent"], result
    assert result["errors"] == 0, result
    spread = result["tx_bytes_both_serving"]
    total = sum(spread.values())
    for ns, sent_bytes in spread.items():
        assert sent_bytes > 0.15 * total, f"host {ns} served too little: {spread}"
    assert result["max_partition_gap_s"] < 60, result
    # the cut-off host had partitions to hand over: they went without answers for its session to
    # expire (6 s) and the rebalance; the survivor's own pause only for the rebalance (~3.5 s)
    assert result["max_partition_gap_s"] > 5.0, result
