"""Hostile input: 10 000 hypothesis-generated malformed messages, interleaved with good requests.

Every malformed message must get the typed error that the wire contract predicts for it (computed
here with ``streams.contract.decode_request`` and the worker's limits), every good request its
normal answer, the worker must stay up and its memory (VmRSS from /proc) stay bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning

from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker, ExternalBroker
from streams.contract import Limits, decode_request, normalise_headers
from streams.errors import RequestError, UnknownModel
from streams.model_io import EmbeddingOutputs, TextInputs
from tests.chaos.tools import TopicReader, hwm_kib, produce_records, request_value, rss_kib
from tests.support.topics import worker_names
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

MALFORMED = 10_000
GOOD_EVERY = 20  # one good request after every 20 malformed ones
LIMITS = Limits(max_message_bytes=16_384, max_inputs=64, max_input_chars=500)
WORKER_SETTINGS = {
    "KINFER_BATCH_BUCKETS": "32",
    "KINFER_SEQ_BUCKETS": "32",
    "KINFER_MAX_MESSAGE_BYTES": str(LIMITS.max_message_bytes),
    "KINFER_MAX_INPUTS_PER_REQUEST": str(LIMITS.max_inputs),
    "KINFER_MAX_INPUT_CHARS": str(LIMITS.max_input_chars),
    "KINFER_MAX_IN_FLIGHT": "1024",
}
GOOD_TEXTS = [f"good request number {i} amid the noise" for i in range(16)]
#: generous: the worker may grow a little (producer buffers, allocator), never without bound
RSS_GROWTH_LIMIT_KIB = 400 * 1024
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

# --- strategies -----------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
any_json = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=6)
    ),
    max_leaves=20,
)
request_like = st.fixed_dictionaries(
    {"id": any_json, "model": st.just("minilm") | any_json, "inputs": any_json},
    optional={
        "version": any_json,
        "deadline_ms": any_json | st.integers(-5, 0) | st.just(10**12),
        "extra": any_json,
    },
)
almost_right = st.fixed_dictionaries(
    {
        "id": st.text(max_size=20) | st.integers(-(2**63), 2**64 - 1) | st.booleans(),
        "model": st.sampled_from(["minilm", "MiniLM", "", "bert", "minilm "]),
        "inputs": st.lists(st.text(max_size=30) | scalars, max_size=4)
        | st.lists(st.just("x"), min_size=LIMITS.max_inputs + 1, max_size=3 * LIMITS.max_inputs)
        | st.just([]),
    },
    optional={"version": st.sampled_from(["0.0.0", "latest"]) | scalars},
)
huge_string = st.integers(LIMITS.max_input_chars + 1, 5_000).map(
    lambda n: request_value("huge", ["é" * n])
)
over_size = st.integers(LIMITS.max_message_bytes + 1, 2 * LIMITS.max_message_bytes).map(
    lambda n: request_value("big", ["x" * 10] * (n // 16))
)
deep = st.integers(100, 3_000).map(
    lambda d: b'{"id": "deep", "inputs": ' + b"[" * d + b"]" * d + b"}"
)
non_finite = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"]).map(
    lambda v: b'{"id": "nf", "model": "minilm", "inputs": ["a"], "deadline_ms": ' + v + b"}"
)
bad_unicode = st.sampled_from(
    [b'"\\ud800"', b'"\xff\xfe"', b'"\xc3\x28"', b'"\xed\xa0\x80"', b'"a\x00b"', b'"\\udfff x"']
).map(lambda s: b'{"id": ' + s + b', "model": "minilm", "inputs": [' + s + b"]}")
values = st.one_of(
    st.binary(max_size=300),
    any_json.map(orjson.dumps),
    request_like.map(orjson.dumps),
    almost_right.map(lambda d: orjson.dumps(d, option=orjson.OPT_PASSTHROUGH_DATACLASS)),
    huge_string,
    over_size,
    deep,
    non_finite,
    bad_unicode,
    st.just(b""),
)
header_name = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=20)
bad_reply_to = st.binary(max_size=300).filter(
    # as the worker reads it: decoded leniently, then stripped (of unicode whitespace too)
    lambda b: not _TOPIC_NAME.match(b.decode("utf-8", "replace").strip())
)
headers = st.lists(
    st.tuples(header_name, st.binary(max_size=100))
    | st.tuples(
        st.sampled_from(["reply-to", "Reply-To", "x-request-id", "x-tenant"]), bad_reply_to
    ),
    max_size=5,
)


def expected_code(value: bytes, raw_headers: list[tuple[str, bytes]]) -> str | None:
    """The error code the worker must answer with, or None for a request it serves."""
    try:
        request = decode_request(value, normalise_headers(raw_headers), LIMITS)
        if request.model != "minilm" or request.version not in (None, "0.1.0"):
            raise UnknownModel(request.model, request.version, {"minilm": ["0.1.0"]})
        # then as the worker checks a request routed to a text encoder
        EmbeddingOutputs().check(request)
        TextInputs(max_tokens=256).validate(request.inputs, LIMITS)
    except RequestError as exc:
        return exc.code.value
    return None


def generate_malformed(count: int) -> list[tuple[bytes, list[tuple[str, bytes]], str]]:
    """``count`` (value, headers, expected error code), drawn by hypothesis (fixed seed)."""
    out: list[tuple[bytes, list[tuple[str, bytes]], str]] = []

    per_example = 20  # hypothesis' per-example overhead dominates single draws

    class Enough(Exception):
        """Raised once ``count`` are drawn: hypothesis stops generating (no shrink phase)."""

    @seed(20261123)
    @settings(
        max_examples=3 * count // per_example + 1,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(st.lists(st.tuples(values, headers), min_size=per_example, max_size=per_example))
    def draw(messages: list[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
        for value, hdrs in messages:
            if len(out) >= count:
                raise Enough
            code = expected_code(value, hdrs)
            if code is not None:
                out.append((value, hdrs, code))

    with contextlib.suppress(Enough), warnings.catch_warnings():
        # the replay of the "failing" (full) example writes its repr: large, and not a problem
        warnings.simplefilter("ignore", HypothesisWarning)
        draw()
    return out[:count]


# --- the test -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    return worker_names("h")


Malformed = list[tuple[bytes, list[tuple[str, bytes]], str]]


@pytest.fixture(scope="module")
def worker_and_inputs(
    broker: EmbeddedBroker | ExternalBroker, names: dict[str, str]
) -> Iterator[tuple[WorkerProcess, Malformed, float]]:
    asyncio.run(
        ensure_topics(broker.bootstrap, {names["request_topic"]: 4, names["response_topic"]: 4})
    )
    process = WorkerProcess(broker.bootstrap, {**names, **WORKER_SETTINGS})
    process.start(wait=False)  # warms up while hypothesis generates
    try:
        started = time.monotonic()
        malformed = generate_malformed(MALFORMED)
        generated_s = time.monotonic() - started
        process.wait_ready()
        yield process, malformed, generated_s
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.terminate(15)
        process.close()


async def test_ten_thousand_malformed_inputs_get_typed_errors_and_good_ones_answers(
    broker: Any, names: dict[str, str], worker_and_inputs: tuple[WorkerProcess, Malformed, float]
) -> None:
    worker, malformed, generated_s = worker_and_inputs
    assert len(malformed) == MALFORMED, f"hypothesis gave only {len(malformed)} malformed inputs"
    topic = names["request_topic"]
    async with TopicReader(broker.bootstrap, [names["response_topic"]]) as reader:
        # calm phase: the reference answer for every good text
        calm = [
            (request_value(f"ref-{i}", [text]), f"ref-{i}".encode(), (), None)
            for i, text in enumerate(GOOD_TEXTS)
        ]
        await produce_records(broker.bootstrap, topic, calm)
        await reader.wait_for(lambda got: len(got) >= len(calm), 60, "reference answers")
        reference = {
            GOOD_TEXTS[int(orjson.loads(r.value)["id"][4:])]: np.asarray(
                orjson.loads(r.value)["outputs"][0]
            )
            for r in reader.records
        }
        rss_before = rss_kib(worker.pid)

        # the storm
        records: list[Any] = []
        expected: dict[bytes, tuple[str, str]] = {}  # key -> ("error", code) | ("good", text)
        for index, (value, hdrs, code) in enumerate(malformed):
            key = f"m-{index}".encode()
            records.append((value, key, hdrs, None))
            expected[key] = ("error", code)
            if index % GOOD_EVERY == GOOD_EVERY - 1:
                text = GOOD_TEXTS[index % len(GOOD_TEXTS)]
                key = f"g-{index}".encode()
                records.append((request_value(key.decode(), [text]), key, (), None))
                expected[key] = ("good", text)
        print(f"\nstorm: {len(records)} messages, {sum(len(r[0]) for r in records) >> 20} MiB")
        storm_started = time.monotonic()
        await produce_records(broker.bootstrap, topic, records)
        peak_rss = rss_before
        answers: dict[bytes, Any] = {}

        def done(got: list[Any]) -> bool:
            for record in got[len(calm) + len(answers) :]:
                answers[record.key] = record
            return len(answers) >= len(expected)

        deadline = time.monotonic() + 150
        while not done(reader.records):
            assert time.monotonic() < deadline, f"{len(expected) - len(answers)} answers missing"
            assert worker.proc is not None
            assert worker.proc.poll() is None, worker.log_tail()
            peak_rss = max(peak_rss, rss_kib(worker.pid))
            await reader.poll(0.5)
        storm_s = time.monotonic() - storm_started
        await reader.poll(1.0)
        rss_after = rss_kib(worker.pid)
        hwm = hwm_kib(worker.pid)

    wrong: list[str] = []
    for key, (kind, what) in expected.items():
        answer = orjson.loads(answers[key].value)
        if kind == "error":
            got = answer.get("error", {}).get("code")
            if got != what:
                wrong.append(f"{key!r}: expected {what}, got {got}")
        else:
            vector = np.asarray(answer["outputs"][0])
            if not np.allclose(vector, reference[what], atol=1e-5):
                wrong.append(f"{key!r}: wrong embedding")
    codes: dict[str, int] = {}
    for _, (kind, what) in expected.items():
        if kind == "error":
            codes[what] = codes.get(what, 0) + 1
    good = sum(1 for kind, _ in expected.values() if kind == "good")
    print(
        f"\nhostile input: {MALFORMED} malformed (generated in {generated_s:.1f}s) + {good} good "
        f"in {storm_s:.1f}s; error codes {codes}\n"
        f"worker RSS before {rss_before / 1024:.0f} MiB, peak {peak_rss / 1024:.0f} MiB, "
        f"after {rss_after / 1024:.0f} MiB, VmHWM {hwm / 1024:.0f} MiB"
    )
    assert not wrong, f"{len(wrong)} wrong answers, e.g. {wrong[:5]}"
    assert len(reader.records) == len(calm) + len(expected), "one answer per message"
    assert worker.proc is not None
    assert worker.proc.poll() is None
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_KIB
