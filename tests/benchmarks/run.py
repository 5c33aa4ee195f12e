"""`make bench`: the model's limit, the pipeline end to end, peers, the host ceiling and scaling.

    python -m tests.benchmarks.run [--quick] [--only host,st-loop] [--seconds 4]
                                   [--host-seconds 2] [--json bench-results/bench.json]

Starts its own embedded Tansu broker on a free 127.0.0.1 port and kinfer workers as separate
processes (tests/support/worker.py) with kinfer's default served settings (buckets, max_batch,
max_wait_ms from streams/settings.py, not the tests' small buckets). Every scenario uses fresh
topics and a fresh consumer group. Targets are reported, never asserted.

Parts (``--only`` takes a comma-separated list of them; all by default):
  limit     the model alone in this process: raw forward per bucket, with tokenisation
  pipeline  kinfer end to end: saturated at 1 and 64 inputs/message, paced latency, worker CPU
  st-loop   a sentence-transformers aiokafka loop at 1 and 64 inputs/message, next to kinfer
  mixed     kinfer at 64 inputs/message of mixed lengths (5-120 tokens): padding efficiency
  peers     an aiokafka loop over kinfer's model, Quix Streams, sentence-transformers alone
  host      the host ceiling: zero-cost model (KINFER_BENCH_ZERO_COST), flood driver
  scaling   partitions x worker processes in one group
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from streams.broker import EmbeddedBroker
from tests.benchmarks import peers
from tests.benchmarks.bench_model import measure_raw, measure_with_tokenisation
from tests.benchmarks.common import (
    MIXED_TOKENS,
    SERVED,
    SETTINGS,
    TEXT,
    Contention,
    inputs_for,
    mixed_inputs_for,
    padding_of,
    sized_saturate,
)
from tests.benchmarks.host import measure_host
from tests.benchmarks.pipeline import (
    Workers,
    log_dir,
    profile_worker,
    run_paced,
    run_saturation,
    topics_for,
    warm,
    workers,
)
from tests.benchmarks.scaling import measure_scaling
from tests.benchmarks.table import Table, met

log = logging.getLogger("bench")

#: The parts of the run, in the order they run (see the module docstring).
PARTS = ("limit", "pipeline", "st-loop", "mixed", "peers", "host", "scaling")
#: Targets of the sentence-transformers loop rows: kinfer / loop, by inputs per message.
ST_LOOP_TARGETS = {1: 3.0, 64: 1.3}
#: Target of the mixed-length row: real tokens / computed tokens.
TARGET_PADDING = 0.90


def ratio_of(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    return a / b if a and b else None


def load_runner(warm_up: bool) -> Any:
    """The served model in this process, on kinfer's served runner configuration."""
    from models.registry import load
    from models.runner import RunnerConfig
    from streams.serving import runner_config

    runner = load("minilm", config=cast(RunnerConfig, runner_config(SETTINGS)))
    if warm_up:
        runner.warm_up()
    return runner


def real_over_computed(runner: Any, texts: list[str]) -> tuple[float, Any]:
    """In-process padding efficiency of one ``runner.infer(texts)`` (real / computed tokens),
    and its timing."""
    _, timing = runner.infer(texts)
    return float(timing.padding_efficiency), timing


def measure_limit(
    args: argparse.Namespace, runner: Any, results: dict[str, Any], table: Table
) -> None:
    """Row 1: the raw jitted model on ready arrays, and with tokenisation, in this process."""
    config = runner.config
    started = time.perf_counter()
    runner.warm_up()
    results["limit"] = {"warm_up_s": round(time.perf_counter() - started, 1), "raw": []}
    seqs = tuple(s for s in config.seq_buckets if s <= 32) if args.quick else config.seq_buckets
    texts = inputs_for(0, SETTINGS.max_batch)  # one full max_batch of the bench's texts
    lengths = runner.servable.tokenize(texts, max(config.seq_buckets)).lengths
    for seq in seqs:
        for batch in config.batch_buckets:
            rate = measure_raw(runner, batch, seq, args.raw_seconds)
            results["limit"]["raw"].append({"batch": batch, "seq": seq, "inputs_per_s": rate})
            if seq <= 32 or batch == max(config.batch_buckets):
                table.add("1", f"raw jitted model, ready arrays, batch {batch} x seq {seq}", rate)
    with_tok = measure_with_tokenisation(runner, texts, args.tok_seconds)
    one = measure_with_tokenisation(runner, texts[:1], args.tok_seconds / 2)
    padding, timing = real_over_computed(runner, texts)
    results["limit"]["with_tokenisation"] = {
        "texts_per_call": len(texts),
        "inputs_per_s": with_tok,
        "mean_tokens": float(lengths.mean()),
        "max_tokens": int(lengths.max()),
        "padded_shapes": [list(s) for s in timing.padded_shapes],
        "padding_efficiency": padding,
        "tokenize_ms": timing.tokenize_ms,
        "compute_ms": timing.compute_ms,
    }
    results["limit"]["with_tokenisation_one_text"] = {"inputs_per_s": one}
    raw_best = max(r["inputs_per_s"] for r in results["limit"]["raw"] if r["seq"] <= 32)
    table.add(
        "1",
        f"model with tokenisation, {len(texts)} texts per call (THE LIMIT)",
        with_tok,
        ratio=with_tok / raw_best,
        ratio_of="best raw",
        padding=padding,
        note=f"texts {lengths.mean():.1f} tokens mean, max {lengths.max()}: "
        f"padded {list(timing.padded_shapes)}; tokenise {timing.tokenize_ms:.1f} ms + "
        f"compute {timing.compute_ms:.1f} ms per call",
    )
    table.add("1", "model with tokenisation, 1 text per call", one)


def _vs_limit(rate: float, limit: float | None) -> str:
    share = ratio_of(rate, limit)
    return "" if share is None else f"target >= 0.90x: {met(share >= 0.9)}; "


async def measure_pipeline(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    group: Workers,
    limit: float | None,
    results: dict[str, Any],
    table: Table,
) -> float:
    """Row 2 (and scaling's 4-partition/1-worker point): saturation, backfill, paced latency."""
    out: dict[str, Any] = results.setdefault("pipeline", {})
    out.update({"partitions": 4, "workers": 1, "served": SERVED})
    sat1 = await run_saturation(
        broker.bootstrap,
        group,
        seconds=args.seconds,
        per_message=1,
        expected_rate=limit,
        broker_pid=broker.pid,
    )
    broker_cpu = 1000 * sat1.broker_cpu_s / max(1, sat1.messages - sat1.missing)
    out["saturation_1"] = sat1.summary()
    table.add(
        "2",
        "kinfer end to end, 1 input/message, saturated",
        sat1.inputs_per_s,
        ratio=ratio_of(sat1.inputs_per_s, limit),
        ratio_of="limit",
        padding=padding_of(sat1.timing),
        note=f"{_vs_limit(sat1.inputs_per_s, limit)}"
        f"{sat1.messages} msgs, mean batch {sat1.timing.get('batch_size', 0):.1f}",
    )
    sat64 = await run_saturation(
        broker.bootstrap, group, seconds=args.seconds, per_message=64, expected_rate=limit
    )
    out["saturation_64"] = sat64.summary()
    table.add(
        "2",
        "kinfer end to end, 64 inputs/message (backfill), saturated",
        sat64.inputs_per_s,
        ratio=ratio_of(sat64.inputs_per_s, limit),
        ratio_of="limit",
        padding=padding_of(sat64.timing),
        note=f"{_vs_limit(sat64.inputs_per_s, limit)}{sat64.messages} msgs",
    )
    half = await run_paced(
        broker.bootstrap, group, rate=sat1.inputs_per_s / 2, seconds=args.seconds
    )
    quarter = await run_paced(
        broker.bootstrap, group, rate=sat1.inputs_per_s / 4, seconds=args.seconds / 2
    )
    out["paced_half"] = half.summary()
    out["paced_quarter"] = quarter.summary()
    lat = out["paced_half"]["latency_ms"]
    batch_ms = half.timing.get("tokenize_ms", 0) + half.timing.get("compute_ms", 0)
    bound = SETTINGS.max_wait_ms + 2 * batch_ms
    full_batch_ms = 1000 * SETTINGS.max_batch / (limit or sat1.inputs_per_s)
    out["latency_target_ms"] = {
        "bound": bound,
        "one_batch_ms": batch_ms,
        "full_batch_ms": full_batch_ms,
    }
    table.add(
        "2",
        f"latency p50 at half load ({sat1.inputs_per_s / 2:.0f} msg/s, paced)",
        lat["p50"],
        "ms",
        note=f"mean batch {half.timing.get('batch_size', 0):.1f}, "
        f"queue {half.timing.get('queue_ms', 0):.1f} ms, model {batch_ms:.1f} ms/batch",
    )
    table.add("2", "latency p95 at half load", lat["p95"], "ms")
    table.add(
        "2",
        "latency p99 at half load",
        lat["p99"],
        "ms",
        note=f"target <= max_wait {SETTINGS.max_wait_ms:g} + 2 x {batch_ms:.1f} = "
        f"{bound:.1f} ms: "
        f"{met(lat['p99'] <= bound)} (a full batch: {full_batch_ms:.0f} ms)",
    )
    for name, run in (("1/4 load", quarter), ("1/2 load", half), ("saturated", sat1)):
        table.add(
            "4",
            f"worker CPU per request, 1 input/msg, {name}",
            run.cpu_ms_per_request,
            "CPU-ms",
            note=f"{run.messages / run.elapsed_s:.0f} msg/s; broker "
            f"{broker_cpu:.2f} CPU-ms/req at saturation"
            if name == "saturated"
            else f"{run.messages / run.elapsed_s:.0f} msg/s",
        )
    table.add(
        "4",
        "worker CPU per input, 64 inputs/msg, saturated",
        sat64.cpu_s * 1000 / max(1, sat64.inputs),
        "CPU-ms",
    )
    if args.profile_seconds > 0:
        out["profile"] = await profile_worker(args, broker, group, limit or sat1.inputs_per_s)
    return sat1.inputs_per_s


async def measure_st_loop(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    group: Workers,
    results: dict[str, Any],
    table: Table,
) -> float | None:
    """Row 3 (d): the sentence-transformers aiokafka loop at 1 and 64 inputs per message, each
    next to kinfer at the same shape (run just before it, same texts); returns kinfer's 1-input
    rate."""
    seconds = args.seconds / 2
    out: dict[str, Any] = {}
    kinfer_one: float | None = None
    async with peers.st_loop_peer(broker.bootstrap, args.st_venv, partitions=4) as peer:
        out["info"] = peer.info
        if peer.why:
            out["why"] = peer.why
            table.add("3", "(d) sentence-transformers aiokafka loop", None, note=peer.why)
            results["st_loop"] = out
            return None
        torch = (
            f"torch {peer.info.get('torch')}, {peer.info.get('torch_threads')} threads, "
            f"OMP_WAIT_POLICY {peer.info.get('omp_wait_policy')}"
        )
        for per_message, target in ST_LOOP_TARGETS.items():
            kinfer = await run_saturation(
                broker.bootstrap,
                group,
                seconds=seconds,
                per_message=per_message,
                expected_rate=None,
                broker_pid=broker.pid,
            )
            loop = await sized_saturate(
                broker.bootstrap,
                peer.request_topic,
                peer.response_topic,
                seconds=seconds,
                per_message=per_message,
                pids=[peer.pid],
                broker_pid=broker.pid,
            )
            why = peers.peer_failed(peer, loop, "the sentence-transformers loop")
            ratio = ratio_of(kinfer.inputs_per_s, loop.inputs_per_s)
            out[f"kinfer_{per_message}"] = kinfer.summary()
            out[f"loop_{per_message}"] = loop.summary()
            out[f"ratio_{per_message}"] = ratio
            if per_message == 1:
                kinfer_one = kinfer.inputs_per_s
            shape = f"{per_message} input{'s' if per_message > 1 else ''}/msg"
            table.add(
                "3",
                f"(d) kinfer, {shape}, next to the loop",
                kinfer.inputs_per_s,
                padding=padding_of(kinfer.timing),
                note=f"{kinfer.messages} msgs; {kinfer.cpu_ms_per_request:.1f} CPU-ms/msg",
            )
            table.add(
                "3",
                f"(d) sentence-transformers aiokafka loop, {shape}",
                loop.inputs_per_s if not why else None,
                ratio=ratio if not why else None,
                ratio_of="kinfer/loop",
                note=why
                or f"target kinfer >= {target:g}x: {met(ratio is not None and ratio >= target)}; "
                f"{torch}; {loop.messages} msgs; {loop.cpu_ms_per_request:.1f} CPU-ms/msg",
            )
    results["st_loop"] = out
    return kinfer_one


async def measure_mixed(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    group: Workers,
    runner: Any,
    results: dict[str, Any],
    table: Table,
) -> None:
    """Row 2: kinfer at 64 inputs per message of mixed lengths; padding efficiency end to end
    (the answers' ``timing.padding_efficiency``) and in-process (one ``runner.infer``)."""
    run = await run_saturation(
        broker.bootstrap,
        group,
        seconds=args.seconds / 2,
        per_message=64,
        expected_rate=None,
        texts=mixed_inputs_for,
    )
    texts = mixed_inputs_for(0, 64)
    in_process, timing = real_over_computed(runner, texts)
    padding = padding_of(run.timing)
    verdict = "n/a" if isinstance(padding, str) else met(padding >= TARGET_PADDING)
    results["mixed"] = {
        **run.summary(),
        "tokens": list(MIXED_TOKENS),
        "in_process": {
            "padding_efficiency": in_process,
            "padded_shapes": [list(shape) for shape in timing.padded_shapes],
        },
    }
    low, high = MIXED_TOKENS
    table.add(
        "2",
        f"kinfer, 64 inputs/msg, mixed lengths {low}-{high} tokens, saturated",
        run.inputs_per_s,
        padding=padding,
        note=f"padding target >= {TARGET_PADDING:.0%}: {verdict}; {run.messages} msgs; "
        f"in-process runner.infer on one such message: {in_process:.0%} real/computed tokens, "
        f"{len(timing.padded_shapes)} calls",
    )


async def measure_peers(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    runner: Any,
    limit: float | None,
    kinfer_rate: float | None,
    results: dict[str, Any],
    table: Table,
) -> None:
    """Row 3: aiokafka per-message loop, Quix Streams, sentence-transformers alone."""
    out: dict[str, Any] = {}
    one = results.get("limit", {}).get("with_tokenisation_one_text", {}).get("inputs_per_s")
    aiok = await peers.run_aiokafka_peer(
        broker.bootstrap, runner, seconds=args.seconds / 2, expected_rate=one, partitions=4
    )
    out["aiokafka_loop"] = aiok.summary()
    ratio = ratio_of(kinfer_rate, aiok.inputs_per_s)
    verdict = "" if ratio is None else f"target kinfer >= 3x: {met(ratio >= 3)}; "
    table.add(
        "3",
        "(a) aiokafka loop, one message at a time, same model",
        aiok.inputs_per_s,
        ratio=ratio,
        ratio_of="kinfer/peer",
        note=f"{verdict}{aiok.cpu_ms_per_request:.1f} CPU-ms/req (driver included)",
    )
    quix, why, info = await peers.run_quix_peer(
        broker.bootstrap,
        args.quix_venv,
        seconds=args.seconds / 2,
        expected_rate=one,
        partitions=4,
    )
    out["quix"] = {"why": why, **info, **(quix.summary() if quix else {})}
    if quix is not None:
        table.add(
            "3",
            "(b) Quix Streams app, consume -> model -> produce",
            quix.inputs_per_s,
            ratio=ratio_of(kinfer_rate, quix.inputs_per_s),
            ratio_of="kinfer/peer",
            note=f"quixstreams {info.get('quixstreams')}, librdkafka "
            f"{info.get('librdkafka')}; {quix.cpu_ms_per_request:.1f} CPU-ms/req",
        )
    else:
        table.add("3", "(b) Quix Streams app, consume -> model -> produce", None, note=why)
    st, why = await asyncio.to_thread(
        peers.run_sentence_transformers,
        args.st_venv,
        seconds=args.tok_seconds,
        texts=SETTINGS.max_batch,
    )
    out["sentence_transformers"] = st or {"why": why}
    if st is not None:
        for size, rate in st["sentences_per_s"].items():
            vs_limit = ratio_of(limit, rate)
            table.add(
                "3",
                f"(c) sentence-transformers (PyTorch CPU) alone, batch {size}",
                rate,
                ratio=ratio_of(kinfer_rate, rate),
                ratio_of="kinfer/peer",
                note=f"torch {st['torch']}, {st['torch_threads']} threads, OMP_WAIT_POLICY "
                f"{st.get('omp_wait_policy')}"
                + ("" if vs_limit is None else f"; vs kinfer limit {vs_limit:.2f}x"),
            )
    else:
        table.add("3", "(c) sentence-transformers (PyTorch CPU) alone", None, note=why)
    results["peers"] = out


async def run_parts(
    args: argparse.Namespace, broker: EmbeddedBroker, results: dict[str, Any], table: Table
) -> dict[str, float]:
    """The selected parts in order; returns other processes' CPU share during each.

    A part that raises is reported (a FAILED row, its error in the JSON) and the run goes on.
    """
    parts = args.only
    others = Contention()
    others.start()
    others.mark()
    busy: dict[str, float] = {}
    seconds: dict[str, float] = results.setdefault("part_seconds", {})
    failures: dict[str, str] = results.setdefault("failures", {})

    def phase(name: str) -> None:
        if name == table.phase:
            return
        if table.phase:
            busy[table.phase] = others.mark()
        table.phase = name

    @contextlib.contextmanager
    def part(name: str) -> Iterator[None]:
        phase(name)
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            log.exception("bench part %s failed", name)
            lines = [line for line in str(exc).splitlines() if line.strip()] or [""]
            failures[name] = f"{type(exc).__name__}: {lines[-1].strip()}"[:400]
            table.add("!", f"part {name} FAILED", None, "", note=failures[name])
        finally:
            seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - started, 1)

    runner: Any = None
    if parts & {"limit", "peers", "mixed", "host"}:
        # warmed up (every shape compiled) by the parts that run the model here; host only
        # tokenises and packs
        runner = load_runner(warm_up=False)
    limit: float | None = None
    if "limit" in parts:
        with part("limit"):
            # in a thread, so that the event loop's CPU sampler (Contention) runs meanwhile
            await asyncio.to_thread(measure_limit, args, runner, results, table)
            limit = results["limit"]["with_tokenisation"]["inputs_per_s"]
    kinfer_rate: float | None = None
    served = [p for p in ("pipeline", "st-loop", "mixed") if p in parts]
    if served:
        with part(served[0]):  # the worker starts in the first of them
            topics = await topics_for(broker.bootstrap, 4, "main")
            with workers(
                broker.bootstrap, partitions=4, count=1, topics=topics, log_dir=args.log_dir
            ) as group:
                results["pipeline"] = {"worker_start_s": round(group.start_s, 1)}
                await warm(broker.bootstrap, group)
                if "pipeline" in parts:
                    with part("pipeline"):
                        kinfer_rate = await measure_pipeline(
                            args, broker, group, limit, results, table
                        )
                if "st-loop" in parts:
                    with part("st-loop"):
                        kinfer_one = await measure_st_loop(args, broker, group, results, table)
                        kinfer_rate = kinfer_rate or kinfer_one
                if "mixed" in parts:
                    with part("mixed"):
                        runner.warm_up()
                        await measure_mixed(args, broker, group, runner, results, table)
    if "peers" in parts:
        with part("peers"):
            runner.warm_up()
            await measure_peers(args, broker, runner, limit, kinfer_rate, results, table)
    if "host" in parts:
        with part("host"):
            await measure_host(args, broker, runner, results, table)
    if "scaling" in parts:
        with part("scaling"):
            await measure_scaling(args, broker, limit, kinfer_rate, results, table)
    phase("")
    await others.stop()
    if runner is not None:
        runner.close()
    return busy


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    table = Table()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "gpu": "none (JAX_PLATFORMS=cpu)",
        },
        "command": args.command,
        "parts": [part for part in PARTS if part in args.only],
        "texts": {"text": TEXT, "mixed_tokens": list(MIXED_TOKENS)},
    }
    started = time.perf_counter()
    with EmbeddedBroker(silent=True) as broker:
        print(f"embedded Tansu broker at {broker.bootstrap}; logs in {args.log_dir}", flush=True)
        busy = await run_parts(args, broker, results, table)
    results["others_cpu_share"] = {k: round(v, 3) for k, v in busy.items()}
    for row in table.rows:
        row["others_cpu_pct"] = round(100 * busy.get(row["phase"], 0.0), 1)
    results["table"] = table.rows
    results["total_s"] = round(time.perf_counter() - started, 1)
    print()
    print(table.render())
    if args.host_table:
        print("\nhost ceiling, one worker, zero-cost model (worker CPU from /proc):")
        print(args.host_table)
    print(
        "\nother processes on this machine (not this benchmark) used, of all cores: "
        + ", ".join(f"{k}: {100 * v:.0f}%" for k, v in busy.items())
    )
    profile = results.get("pipeline", {}).get("profile")
    if profile:
        print("\nworker profile, 1 input/msg saturated:")
        print(
            f"  CPU-ms per request by thread: {json.dumps(profile['thread_cpu_ms_per_request'])}"
            f"; broker {profile['broker_cpu_ms_per_request']} CPU-ms/req"
        )
        spy = profile.get("py_spy", {})
        print(f"  py-spy, share of Python samples by stage: {json.dumps(spy.get('stages', spy))}")
    print(
        "\nseconds per part: "
        + ", ".join(f"{k} {v:.0f}" for k, v in results["part_seconds"].items())
    )
    for name, why in results["failures"].items():
        print(f"FAILED: {name}: {why}")
    print(f"\ntotal {results['total_s']} s; JSON: {args.json}")
    return results


def _parts(text: str) -> set[str]:
    parts = {part.strip() for part in text.split(",") if part.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}"
        )
    return parts


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="about 2 minutes: fewer points")
    parser.add_argument("--json", type=Path, default=Path("bench-results/bench.json"))
    parser.add_argument(
        "--st-venv",
        type=Path,
        default=Path(
            os.environ.get(
                "KINFER_ST_VENV", "/tmp/st-venv" if Path("/tmp/st-venv").exists() else ".st-venv"
            )
        ),
    )
    parser.add_argument(
        "--quix-venv",
        type=Path,
        default=Path(
            os.environ.get(
                "KINFER_QUIX_VENV",
                "/tmp/quix-venv" if Path("/tmp/quix-venv").exists() else ".quix-venv",
            )
        ),
    )
    parser.add_argument(
        "--only",
        type=_parts,
        default=set(PARTS),
        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: all)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="length of each pipeline scenario (st-loop, mixed and peers rows take half)",
    )
    parser.add_argument("--host-seconds", type=float, help="length of each host-ceiling flood")
    parser.add_argument("--profile-seconds", type=float, help="py-spy run; 0 skips it")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = args.seconds or 4.0
        args.host_seconds = args.host_seconds or 1.5
        args.raw_seconds, args.tok_seconds = 0.5, 1.5
        args.profile_seconds = 4.0 if args.profile_seconds is None else args.profile_seconds
        args.scaling = [(1, 1), (4, 2)]
    else:
        args.seconds = args.seconds or 10.0
        args.host_seconds = args.host_seconds or 3.0
        args.raw_seconds, args.tok_seconds = 1.0, 3.0
        args.profile_seconds = 8.0 if args.profile_seconds is None else args.profile_seconds
        args.scaling = [(1, 1), (2, 1), (1, 2), (2, 2), (4, 2)]
    args.log_dir = log_dir()
    args.host_table = ""
    args.command = " ".join(["python -m tests.benchmarks.run", *(argv or sys.argv[1:])])
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so the broker and workers this run started are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    results = asyncio.run(main_async(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
