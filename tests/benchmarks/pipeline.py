"""kinfer end to end: worker processes on the embedded broker, saturated and paced."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.common import (
    SERVED,
    Run,
    Texts,
    inputs_for,
    make_topics,
    paced,
    saturate,
    sized_saturate,
    thread_cpu,
    unique,
)
from tests.support.worker import WorkerProcess

log = logging.getLogger(__name__)


@dataclass
class Workers:
    """The worker processes of one scenario and its topics."""

    processes: list[WorkerProcess]
    request_topic: str
    response_topic: str
    start_s: float

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]


@contextlib.contextmanager
def workers(
    bootstrap: str,
    *,
    partitions: int,
    count: int,
    topics: tuple[str, str],
    log_dir: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[Workers]:
    """``count`` workers in one fresh consumer group on fresh topics (served buckets).

    ``env``: more KINFER_* settings for these workers (e.g. KINFER_BENCH_ZERO_COST).
    """
    request_topic, response_topic = topics
    app_id = unique("app")
    settings = {
        **SERVED,
        **(env or {}),
        "KINFER_APP_ID": app_id,
        "KINFER_REQUEST_TOPIC": request_topic,
        "KINFER_RESPONSE_TOPIC": response_topic,
        "KINFER_PARTITIONS": str(partitions),
    }
    processes = [
        WorkerProcess(bootstrap, settings, log_path=log_dir / f"{app_id}-{n}.log")
        for n in range(count)
    ]
    started = time.perf_counter()
    try:
        for process in processes:
            process.start(wait=False)
        for process in processes:
            process.wait_ready()
        # every member has its assignment once all are ready; give a last rebalance a moment
        if count > 1:
            time.sleep(2.0)
        yield Workers(processes, request_topic, response_topic, time.perf_counter() - started)
    finally:
        for process in processes:
            if process.proc is not None and process.proc.poll() is None:
                process.terminate(15)
            process.close()


async def topics_for(bootstrap: str, partitions: int, prefix: str) -> tuple[str, str]:
    """Fresh request/response topics."""
    return await make_topics(bootstrap, partitions, prefix)


async def warm(bootstrap: str, group: Workers) -> None:
    """A few requests through the pipeline so connections and caches are hot.

    Raises RuntimeError (with the last error line of a worker's log) when none is answered.
    """
    run = await saturate(
        bootstrap,
        group.request_topic,
        group.response_topic,
        messages=32,
        per_message=1,
        pids=group.pids,
        timeout_s=60,
    )
    if run.missing == run.messages:
        errors = [
            line.strip()
            for process in group.processes
            for line in process.log_tail(20000).splitlines()
            if "Error" in line or "ERROR" in line
        ]
        raise RuntimeError(
            f"the workers answered none of {run.messages} warm-up requests in 60 s: "
            + (
                errors[-1][:300]
                if errors
                else f"no error in their logs ({group.processes[0].log_path})"
            )
        )


async def run_saturation(
    bootstrap: str,
    group: Workers,
    *,
    seconds: float,
    per_message: int,
    expected_rate: float | None,
    broker_pid: int | None = None,
    texts: Texts = inputs_for,
) -> Run:
    """A backlog sized to take about ``seconds`` at ``expected_rate`` inputs/s (None: probed)."""
    if expected_rate is None:
        return await sized_saturate(
            bootstrap,
            group.request_topic,
            group.response_topic,
            seconds=seconds,
            per_message=per_message,
            pids=group.pids,
            broker_pid=broker_pid,
            texts=texts,
        )
    messages = max(8, int(seconds * expected_rate / per_message))
    return await saturate(
        bootstrap,
        group.request_topic,
        group.response_topic,
        messages=messages,
        per_message=per_message,
        pids=group.pids,
        timeout_s=max(60.0, 6 * seconds),
        broker_pid=broker_pid,
        texts=texts,
    )


async def run_paced(bootstrap: str, group: Workers, *, rate: float, seconds: float) -> Run:
    """Paced single-input requests at ``rate`` messages/s."""
    return await paced(
        bootstrap,
        group.request_topic,
        group.response_topic,
        rate=rate,
        seconds=seconds,
        pids=group.pids,
    )


def py_spy_record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start ``py-spy record --format raw`` on ``pid`` (None when py-spy is missing)."""
    import shutil
    import sys

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        return None
    return subprocess.Popen(
        [
            exe,
            "record",
            "--format",
            "raw",
            "--rate",
            "200",
            "--duration",
            str(int(seconds)),
            "--threads",
            "--nonblocking",
            "--pid",
            str(pid),
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


#: Stage of a sampled stack: leaf-most frame first, the first stage with a matching needle wins.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle (select)", ("EpollSelector.select", "Condition.wait", "_worker (concurrent")),
    ("pad", ("pad_chunk",)),
    ("plan buckets", ("plan_chunks", "_cover", "split_batch")),
    ("tokenise", ("tokenize", "MiniLMTokenizer")),
    ("compute (dispatch + wait)", ("jax/", "flax/", "ModelRunner.infer")),
    ("encode answer", ("encode_result", "describe (streams")),
    (
        "decode request",
        ("decode_request", "route_for", "normalise_headers", "RequestPipeline.prepare"),
    ),
    ("commit", ("commit",)),
    ("produce", ("producer", "sender.py", "publish", "FaustPublisher")),
    (
        "consume",
        (
            "fetcher",
            "getmany",
            "consumer",
            "Stream.events",
            "Stream._c_aiter",
            "create_event",
            "serializers",
            "inbound_from_event",
            "conductor",
        ),
    ),
    ("batching", ("batching.py",)),
    ("pipeline / agent", ("pipeline.py", "agents.py", "flow.py")),
    ("event loop / other", ("",)),
)


def classify(stack: str) -> str:
    """The stage a py-spy raw stack (frames ';'-joined, root first) belongs to."""
    for frame in stack.split(";")[::-1]:
        for stage, needles in STAGES[:-1]:
            if any(needle in frame for needle in needles):
                return stage
    return STAGES[-1][0]


def summarise_profile(path: Path) -> dict[str, Any]:
    """Samples per stage (share of on-CPU samples), and per thread, from a raw py-spy file."""
    stages: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    if not path.exists():
        return {"error": f"no profile at {path}"}
    for line in path.read_text(errors="replace").splitlines():  # "frame;frame;... count"
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        thread = stack.split(";", 1)[0].split("(")[0].strip()
        if ":" in stack.split(";", 1)[0]:
            thread = stack.split(";", 1)[0].split(":", 1)[1].strip()
        threads[thread] = threads.get(thread, 0) + count
        stage = classify(stack)
        stages[stage] = stages.get(stage, 0) + count
    if not total:
        return {"error": "no samples"}
    return {
        "samples": total,
        "stages": {
            k: round(100 * v / total, 1) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])
        },
        "threads": {
            k: round(100 * v / total, 1)
            for k, v in sorted(threads.items(), key=lambda kv: -kv[1])[:6]
        },
    }


def log_dir() -> Path:
    """Where worker logs go."""
    return Path(tempfile.mkdtemp(prefix="kinfer-bench-"))


async def profile_worker(
    args: argparse.Namespace, broker: Any, group: Any, limit: float
) -> dict[str, Any]:
    """py-spy on the worker during another 1-input saturation run."""
    raw = args.log_dir / "worker-profile.txt"
    pid = group.pids[0]
    spy = py_spy_record(pid, args.profile_seconds, raw)
    await asyncio.sleep(0.5)
    before = thread_cpu(pid)
    run = await run_saturation(
        broker.bootstrap,
        group,
        seconds=args.profile_seconds + 1,
        per_message=1,
        expected_rate=limit,
        broker_pid=broker.pid,
    )
    after = thread_cpu(pid)
    answered = max(1, run.messages - run.missing)
    per_thread = {
        name: round(1000 * (after[name] - before.get(name, 0.0)) / answered, 2)
        for name in after
        if after[name] - before.get(name, 0.0) > 0
    }
    summary: dict[str, Any] = {
        "run": run.summary(),
        "thread_cpu_ms_per_request": dict(sorted(per_thread.items(), key=lambda kv: -kv[1])),
        "broker_cpu_ms_per_request": round(1000 * run.broker_cpu_s / answered, 2),
    }
    if spy is None:
        summary["py_spy"] = {"error": "py-spy not installed (pip install py-spy)"}
    else:
        await asyncio.to_thread(spy.wait, args.profile_seconds + 30)
        summary["py_spy"] = {**summarise_profile(raw), "raw": str(raw)}
    return summary
