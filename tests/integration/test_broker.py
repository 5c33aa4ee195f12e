"""The embedded Tansu broker: lifecycle, topics, and an aiokafka round trip with headers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from streams.admin import BrokerUnavailableError, ensure_topics, wait_for_broker
from streams.broker import BrokerStartError, EmbeddedBroker, ExternalBroker, free_port

pytestmark = pytest.mark.broker


async def _topics(bootstrap: str) -> dict[str, int]:
    """Topic name -> partition count, as the broker describes them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = await admin.list_topics()
        described = await admin.describe_topics(names) if names else []
        return {d["topic"]: len(d["partitions"]) for d in described}
    finally:
        await admin.close()


async def _consume(
    bootstrap: str, topic: str, count: int, *, group: str | None = None, timeout_s: float = 20
) -> tuple[list[ConsumerRecord[bytes, bytes]], dict[int, int | None]]:
    """Read `count` records from the committed offset (else the beginning) of `topic`.

    With a `group`, commit what was read; return the records and the committed offsets.
    Short group timeouts: Tansu keeps a member that left until its session expires.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
        rebalance_timeout_ms=3000,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    committed: dict[int, int | None] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while len(records) < count or not consumer.assignment():
                batch = await consumer.getmany(timeout_ms=200)
                for part in batch.values():
                    records.extend(part)
            if group is not None:
                await consumer.commit()
                for tp in consumer.assignment():
                    committed[tp.partition] = await consumer.committed(tp)
    finally:
        await consumer.stop()
    return records, committed


def test_start_stop_by_pid() -> None:
    broker = EmbeddedBroker(silent=True)
    assert broker.pid is None
    assert not broker.running
    with broker:
        pid = broker.pid
        assert pid is not None
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        os.kill(pid, 0)  # alive
    assert broker.pid is None
    assert not broker.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not broker.log_path.exists(), "the temporary log is removed on stop"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
def test_the_broker_stops_when_the_process_that_started_it_is_killed() -> None:
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from streams.broker import EmbeddedBroker\n"
            "b = EmbeddedBroker(silent=True); b.start()\n"
            "print(b.pid, b.log_path, flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert starter.stdout is not None
        pid_text, log_name = starter.stdout.readline().split()
        broker_pid = int(pid_text)
        Path(log_name).unlink()  # its stop() never runs; the open file lives on until it exits
        os.kill(broker_pid, 0)  # alive while its parent lives
    finally:
        starter.kill()  # kill -9: no atexit, no stop()
        starter.wait(10)
        if starter.stdout is not None:
            starter.stdout.close()
    deadline = time.monotonic() + 10
    while _alive(broker_pid):
        if time.monotonic() > deadline:
            os.kill(broker_pid, signal.SIGKILL)  # ours: do not leave it behind
            pytest.fail("the broker outlived the process that started it")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie - exited, not yet reaped by init - counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_port_in_use_is_a_start_error(fresh_broker: EmbeddedBroker) -> None:
    clash = EmbeddedBroker(port=fresh_broker.port, start_timeout_s=2)
    with pytest.raises(BrokerStartError, match="already in use"):
        clash.start()
    clash.stop()  # removes its temporary log
    assert fresh_broker.running


def test_broker_that_dies_is_a_start_error_with_log_tail() -> None:
    broker = EmbeddedBroker(start_timeout_s=5)
    script = "echo tansu-says-goodbye; exit 3"
    broker.command = lambda: ["/bin/sh", "-c", script]  # type: ignore[method-assign]
    with pytest.raises(BrokerStartError, match="exited with code 3") as info:
        broker.start()
    assert "tansu-says-goodbye" in info.value.log_tail
    assert not broker.running
    broker.stop()


def test_sigterm_ignored_falls_back_to_sigkill(tmp_path: Path) -> None:
    broker = EmbeddedBroker(stop_timeout_s=0.5)
    real = " ".join(broker.command())
    child_pid_file = tmp_path / "child.pid"
    # A shell that ignores SIGTERM and runs the real broker as its child.
    script = f"trap '' TERM; {real} & echo $! > {child_pid_file}; wait"
    broker.command = lambda: ["/bin/sh", "-c", script]  # type: ignore[method-assign]
    broker.start()
    pid = broker.pid
    assert pid is not None
    try:
        broker.stop()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        # The shell's child was not EmbeddedBroker's to signal: end it by its own PID.
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            os.kill(int(child_pid_file.read_text()), signal.SIGKILL)


async def test_wait_for_broker(broker: EmbeddedBroker | ExternalBroker) -> None:
    await wait_for_broker(broker.bootstrap, timeout_s=10)


async def test_wait_for_broker_times_out_with_a_typed_error() -> None:
    port = free_port()
    with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}"):
        await wait_for_broker(f"127.0.0.1:{port}", timeout_s=0.5)


async def test_ensure_topics_is_idempotent(
    broker: EmbeddedBroker | ExternalBroker, unique_name: Callable[[str], str]
) -> None:
    a, b = unique_name("a"), unique_name("b")
    await ensure_topics(broker.bootstrap, {a: 3, b: 1})
    await ensure_topics(broker.bootstrap, {a: 3, b: 1})
    topics = await _topics(broker.bootstrap)
    assert topics[a] == 3
    assert topics[b] == 1


async def test_round_trip_with_key_and_headers(
    broker: EmbeddedBroker | ExternalBroker, unique_name: Callable[[str], str]
) -> None:
    topic, group = unique_name("rt"), unique_name("g")
    await ensure_topics(broker.bootstrap, {topic: 2})
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for i in range(6):
            await producer.send_and_wait(
                topic,
                f"v{i}".encode(),
                key=f"k{i}".encode(),
                headers=[("x-request-id", f"id-{i}".encode()), ("x-empty", b"")],
            )
    finally:
        await producer.stop()

    records, committed = await _consume(broker.bootstrap, topic, 6, group=group)
    seen = {r.key: (r.value, dict(r.headers)) for r in records}
    assert seen == {
        f"k{i}".encode(): (f"v{i}".encode(), {"x-request-id": f"id-{i}".encode(), "x-empty": b""})
        for i in range(6)
    }
    assert committed == _next_offsets(records, partitions=2)


async def test_group_resumes_from_its_commit(
    broker: EmbeddedBroker | ExternalBroker, unique_name: Callable[[str], str]
) -> None:
    topic, group = unique_name("resume"), unique_name("g")
    await ensure_topics(broker.bootstrap, {topic: 2})
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for i in range(4):
            await producer.send_and_wait(topic, b"first", partition=i % 2)
        first, _ = await _consume(broker.bootstrap, topic, 4, group=group)
        for i in range(2):
            await producer.send_and_wait(topic, b"second", partition=i % 2)
    finally:
        await producer.stop()
    # A new member of the same group starts from the commit: it sees only the second batch.
    second, committed = await _consume(broker.bootstrap, topic, 2, group=group)
    assert [r.value for r in second] == [b"second", b"second"]
    assert committed == _next_offsets(first + second, partitions=2)


def _next_offsets(records: list[ConsumerRecord[bytes, bytes]], partitions: int) -> dict[int, int]:
    """Per partition, the offset after the last record seen (0 where none)."""
    out = dict.fromkeys(range(partitions), 0)
    for r in records:
        out[r.partition] = max(out[r.partition], r.offset + 1)
    return out


async def test_restart_keeps_port_and_loses_topics(
    fresh_broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("restart")
    await ensure_topics(fresh_broker.bootstrap, {topic: 2})
    assert topic in await _topics(fresh_broker.bootstrap)

    port, pid = fresh_broker.port, fresh_broker.pid
    fresh_broker.restart()  # in this thread: the broker stops when its starting thread ends
    assert fresh_broker.port == port
    assert fresh_broker.pid != pid
    assert topic not in await _topics(fresh_broker.bootstrap), "Tansu storage is memory only"

    await ensure_topics(fresh_broker.bootstrap, {topic: 2})
    assert (await _topics(fresh_broker.bootstrap))[topic] == 2
