"""Shared pieces of the benchmark run: texts, load generators, answer timing, CPU accounting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from streams.admin import ensure_topics
from streams.settings import Settings
from tests.support.answers import AnswerReader

#: The text every row of the table runs, numbered: 17-20 tokens with [CLS] and [SEP] (17 below
#: n = 342, 19 for most n in the thousands). The peers (sentence-transformers alone and its
#: aiokafka loop) are sent the same texts, made here.
TEXT = "This is sentence number {n} about a customer order that was delayed in shipping."
#: Words that are one WordPiece each: mixed-length texts have one token per word.
_PHRASE = (
    "the customer said her order was late again and the team would send a new one next week "
    "after they check stock in every store near her home city"
)
_WORDS = tuple(_PHRASE.split())
#: Mixed-length texts (one row at 64 inputs/message): 5 to 120 tokens, [CLS] and [SEP] included.
MIXED_TOKENS = (5, 120)
#: What kinfer serves by default (streams/settings.py, or KINFER_* in this environment): every
#: kinfer row runs it, and the limit is measured on the same runner configuration.
SETTINGS = Settings()
SERVED = {
    "KINFER_BATCH_BUCKETS": ",".join(map(str, SETTINGS.batch_buckets)),
    "KINFER_SEQ_BUCKETS": ",".join(map(str, SETTINGS.seq_buckets)),
    "KINFER_MAX_BATCH": str(SETTINGS.max_batch),
    "KINFER_MAX_WAIT_MS": f"{SETTINGS.max_wait_ms:g}",
    "KINFER_CALL_COST_ROWS": f"{SETTINGS.call_cost_rows:g}",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the processes (from /proc/PID/stat), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / CLK_TCK


def unique(prefix: str) -> str:
    """A fresh name: topics and groups are never reused between scenarios."""
    return f"bench-{prefix}-{uuid.uuid4().hex[:6]}"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def request_value(request_id: str, inputs: Sequence[str], encoding: str = "float") -> bytes:
    """A request record as clients send it; ``encoding`` is sent only when it is not "float"."""
    doc: dict[str, Any] = {"id": request_id, "model": "minilm", "inputs": list(inputs)}
    if encoding != "float":
        doc["encoding"] = encoding
    return orjson.dumps(doc)


def text_for(n: int) -> str:
    """Text number ``n`` (every row's text)."""
    return TEXT.format(n=n)


#: Makes the inputs of message ``index`` with ``per_message`` inputs.
Texts = Callable[[int, int], list[str]]


def inputs_for(index: int, per_message: int) -> list[str]:
    """The inputs of message ``index``: texts numbered on from the previous message's."""
    return [text_for(index * per_message + j) for j in range(per_message)]


def mixed_text(n: int) -> str:
    """Mixed-length text ``n``: lengths step through 5..120 tokens in a scrambled order."""
    low, high = MIXED_TOKENS
    tokens = low + (n * 53) % (high - low + 1)  # 53 is prime to 116: every length, in turn
    words = tokens - 3  # [CLS], the final ".", [SEP]
    return " ".join(_WORDS[(n * 7 + k) % len(_WORDS)] for k in range(words)) + "."


def mixed_inputs_for(index: int, per_message: int) -> list[str]:
    """The inputs of message ``index`` for the mixed-length row."""
    return [mixed_text(index * per_message + j) for j in range(per_message)]


class TimedReader(AnswerReader):
    """An AnswerReader that stamps each answer's arrival (time.time()) and fetches eagerly."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        # AnswerReader's fields, with a consumer that does not wait 500 ms on empty fetches
        self.topic = topic
        self.from_beginning = False
        self.answers = {}
        self.records = {}
        self.duplicates = 0
        self.mismatched = 0
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
            max_partition_fetch_bytes=16 * 1024 * 1024,
        )
        self.arrived: dict[Hashable, float] = {}

    def _take(self, record: ConsumerRecord[bytes, bytes]) -> None:
        stamp = time.time()
        super()._take(record)
        answer_id = orjson.loads(record.value).get("id")
        self.arrived.setdefault(answer_id, stamp)

    async def collect_quietly(self, ids: set[Hashable], timeout_s: float) -> int:
        """Poll until every id is answered or ``timeout_s`` passes; returns how many are missing."""
        deadline = time.monotonic() + timeout_s
        while not ids <= self.answers.keys() and time.monotonic() < deadline:
            await self.poll(0.05)
        return len(ids - self.answers.keys())


async def make_topics(bootstrap: str, partitions: int, prefix: str) -> tuple[str, str]:
    """A fresh request topic with ``partitions`` and its response topic."""
    request_topic, response_topic = unique(f"{prefix}-req"), unique(f"{prefix}-resp")
    await ensure_topics(bootstrap, {request_topic: partitions, response_topic: partitions})
    return request_topic, response_topic


def producer(bootstrap: str, linger_ms: int = 5) -> AIOKafkaProducer:
    """The load generator's producer."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, max_batch_size=1 << 20
    )


@dataclass
class Run:
    """What one load run measured."""

    messages: int
    inputs: int
    elapsed_s: float
    missing: int
    cpu_s: float
    broker_cpu_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        answered = self.messages - self.missing
        return 1000 * self.cpu_s / answered if answered else float("nan")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "messages": self.messages,
            "inputs": self.inputs,
            "elapsed_s": round(self.elapsed_s, 3),
            "missing": self.missing,
            "inputs_per_s": round(self.inputs_per_s, 1),
            "messages_per_s": round(self.messages / self.elapsed_s, 1) if self.elapsed_s else 0,
            "cpu_ms_per_request": round(self.cpu_ms_per_request, 2),
            "broker_cpu_ms_per_request": round(
                1000 * self.broker_cpu_s / max(1, self.messages - self.missing), 2
            ),
            "timing_mean": {k: round(v, 3) for k, v in self.timing.items()},
        }
        if self.latencies_ms:
            out["latency_ms"] = {
                f"p{q}": round(percentile(self.latencies_ms, q), 1) for q in (50, 95, 99)
            }
        return out


def mean_timing(answers: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Mean of each ``timing`` field over the answers that carry one."""
    sums: dict[str, list[float]] = {}
    for answer in answers:
        for name, value in (answer.get("timing") or {}).items():
            sums.setdefault(name, []).append(float(value))
    return {name: statistics.fmean(values) for name, values in sums.items()}


def padding_of(timing: dict[str, float]) -> float | str:
    """Mean ``timing.padding_efficiency`` (real / computed tokens), or "n/a" when not reported."""
    return timing.get("padding_efficiency", "n/a")


async def saturate(
    bootstrap: str,
    request_topic: str,
    response_topic: str,
    *,
    messages: int,
    per_message: int,
    pids: Sequence[int],
    timeout_s: float = 120.0,
    broker_pid: int | None = None,
    texts: Texts = inputs_for,
    encoding: str = "float",
) -> Run:
    """Produce a backlog of ``messages`` at once; time from the first send to the last answer."""
    tag = uuid.uuid4().hex[:6]
    ids: set[Hashable] = {f"s{tag}-{i}" for i in range(messages)}
    values = [
        request_value(f"s{tag}-{i}", texts(i, per_message), encoding) for i in range(messages)
    ]
    async with TimedReader(bootstrap, response_topic) as reader:
        prod = producer(bootstrap)
        await prod.start()
        try:
            cpu0, bcpu0 = cpu_seconds(pids), cpu_seconds([broker_pid] if broker_pid else [])
            started = time.time()
            futures = [
                await prod.send(request_topic, value, key=f"k{i}".encode())
                for i, value in enumerate(values)
            ]
            collecting = asyncio.ensure_future(reader.collect_quietly(ids, timeout_s))
            await asyncio.gather(*futures)
            missing = await collecting
            cpu1, bcpu1 = cpu_seconds(pids), cpu_seconds([broker_pid] if broker_pid else [])
        finally:
            await prod.stop()
        arrivals = [reader.arrived[i] for i in ids if i in reader.arrived]
        ended = max(arrivals) if arrivals else time.time()
        answers = [reader.answers[i] for i in ids if i in reader.answers]
    answered = messages - missing
    return Run(
        messages=messages,
        inputs=answered * per_message,
        elapsed_s=ended - started,
        missing=missing,
        cpu_s=cpu1 - cpu0,
        broker_cpu_s=bcpu1 - bcpu0,
        timing=mean_timing(answers),
    )


async def sized_saturate(
    bootstrap: str,
    request_topic: str,
    response_topic: str,
    *,
    seconds: float,
    per_message: int,
    pids: Sequence[int],
    broker_pid: int | None = None,
    texts: Texts = inputs_for,
    encoding: str = "float",
) -> Run:
    """:func:`saturate` with a backlog sized to take about ``seconds``, from probe backlogs.

    Probes (which also warm the path up) grow 8x until one takes 0.25 s; their rate sizes the
    measured backlog. For rows whose rate nothing else predicts (peers, zero-cost models).
    """
    probe = 4 if per_message > 1 else 16
    while True:
        run = await saturate(
            bootstrap,
            request_topic,
            response_topic,
            messages=probe,
            per_message=per_message,
            pids=pids,
            timeout_s=max(60.0, 6 * seconds),
            texts=texts,
            encoding=encoding,
        )
        if run.missing or run.elapsed_s >= 0.25 or probe >= 4096:
            break
        probe *= 8
    rate = (run.messages - run.missing) / max(run.elapsed_s, 1e-3)
    return await saturate(
        bootstrap,
        request_topic,
        response_topic,
        messages=max(8, int(seconds * rate)),
        per_message=per_message,
        pids=pids,
        timeout_s=max(60.0, 6 * seconds),
        broker_pid=broker_pid,
        texts=texts,
        encoding=encoding,
    )


async def paced(
    bootstrap: str,
    request_topic: str,
    response_topic: str,
    *,
    rate: float,
    seconds: float,
    pids: Sequence[int],
    per_message: int = 1,
    drain_s: float = 30.0,
) -> Run:
    """Send ``rate`` messages/s for ``seconds``; latency = answer arrival - the request's send."""
    tag = uuid.uuid4().hex[:6]
    count = max(1, int(rate * seconds))
    sent: dict[Hashable, float] = {}
    async with TimedReader(bootstrap, response_topic) as reader:
        prod = producer(bootstrap, linger_ms=0)
        await prod.start()
        stop = asyncio.Event()

        async def read() -> None:
            while not stop.is_set():
                await reader.poll(0.02)

        reading = asyncio.ensure_future(read())
        try:
            cpu0 = cpu_seconds(pids)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            wall0 = time.time()
            for i in range(count):
                delay = t0 + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                rid = f"p{tag}-{i}"
                sent[rid] = time.time()
                await prod.send(
                    request_topic,
                    request_value(rid, inputs_for(i, per_message)),
                    key=f"k{i}".encode(),
                )
            deadline = time.monotonic() + drain_s
            while not sent.keys() <= reader.answers.keys() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            cpu1 = cpu_seconds(pids)
        finally:
            stop.set()
            await reading
            await prod.stop()
    latencies = [(reader.arrived[i] - sent[i]) * 1000 for i in sent if i in reader.arrived]
    arrivals = [reader.arrived[i] for i in sent if i in reader.arrived]
    missing = count - len(latencies)
    return Run(
        messages=count,
        inputs=len(latencies) * per_message,
        elapsed_s=(max(arrivals) - wall0) if arrivals else seconds,
        missing=missing,
        cpu_s=cpu1 - cpu0,
        latencies_ms=latencies,
        timing=mean_timing(reader.answers[i] for i in sent if i in reader.answers),
    )


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (``comm``) of ``pid``; numbered pool threads are merged."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")].rstrip("0123456789_-")
        fields = text.rsplit(")", 1)[1].split()
        out[name or "?"] = out.get(name or "?", 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def _busy_jiffies() -> int:
    with open("/proc/stat", encoding="ascii") as f:
        parts = [int(v) for v in f.readline().split()[1:]]
    return sum(parts) - parts[3] - (parts[4] if len(parts) > 4 else 0)  # minus idle, iowait


def _own_tree() -> list[int]:
    """This process and its descendants (workers, broker, peers)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sorted(tree)


class Contention:
    """How much of the machine other people's processes used since the last ``mark()``.

    Samples /proc/stat (all CPUs' busy time) and this process tree's CPU every second; the
    difference is CPU that was not ours, as a share of all cores.
    """

    def __init__(self) -> None:
        self.foreign_s = 0.0
        self.wall_s = 0.0
        self._last: tuple[float, dict[int, float], float] | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> None:
        busy = _busy_jiffies() / CLK_TCK
        own = {pid: cpu_seconds([pid]) for pid in _own_tree()}
        now = time.monotonic()
        if self._last is not None:
            last_busy, last_own, last_t = self._last
            ours = sum(cpu - last_own.get(pid, cpu) for pid, cpu in own.items())
            self.foreign_s += max(0.0, busy - last_busy - ours)
            self.wall_s += now - last_t
        self._last = (busy, own, now)

    async def _run(self) -> None:
        while not self._stop.is_set():
            await asyncio.to_thread(self._sample)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def mark(self) -> float:
        """Share of all cores (0..1) used by others since the last mark."""
        share = self.foreign_s / (self.wall_s * (os.cpu_count() or 1)) if self.wall_s else 0.0
        self.foreign_s = self.wall_s = 0.0
        return share
