"""`make bench`: the model's limit, the pipeline end to end, peers and scaling, in one table.

    python -m tests.benchmarks.run [--quick] [--json bench-results/bench.json]

Starts its own embedded Tansu broker on a free 127.0.0.1 port and kinfer workers as separate
processes (tests/support/worker.py) with kinfer's default served settings (buckets, max_batch,
max_wait_ms from streams/settings.py, not the tests' small buckets). Every scenario uses fresh
topics and a fresh consumer group. Targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streams.broker import EmbeddedBroker
from tests.benchmarks import peers
from tests.benchmarks.bench_model import measure_raw, measure_with_tokenisation
from tests.benchmarks.common import SERVED, SETTINGS, TEXTS, Contention
from tests.benchmarks.pipeline import (
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


def measure_limit(args: argparse.Namespace, results: dict[str, Any], table: Table) -> Any:
    """Row 1: the raw jitted model on ready arrays, and with tokenisation, in this process."""
    from models.registry import load
    from streams.serving import runner_config

    config = runner_config(SETTINGS)
    started = time.perf_counter()
    runner = load("minilm", config=config)
    runner.warm_up()
    results["limit"] = {"warm_up_s": round(time.perf_counter() - started, 1), "raw": []}
    seqs = tuple(s for s in config.seq_buckets if s <= 32) if args.quick else config.seq_buckets
    lengths = runner.servable.tokenize(list(TEXTS), max(config.seq_buckets)).lengths
    for seq in seqs:
        for batch in config.batch_buckets:
            rate = measure_raw(runner, batch, seq, args.raw_seconds)
            results["limit"]["raw"].append({"batch": batch, "seq": seq, "inputs_per_s": rate})
            if seq <= 32 or batch == max(config.batch_buckets):
                table.add("1", f"raw jitted model, ready arrays, batch {batch} x seq {seq}", rate)
    texts = list(TEXTS) * max(1, SETTINGS.max_batch // len(TEXTS))  # one full max_batch
    with_tok = measure_with_tokenisation(runner, texts, args.tok_seconds)
    one = measure_with_tokenisation(runner, [TEXTS[0]], args.tok_seconds / 2)
    _, timing = runner.infer(texts)
    results["limit"]["with_tokenisation"] = {
        "texts_per_call": len(texts),
        "inputs_per_s": with_tok,
        "mean_tokens": float(lengths.mean()),
        "max_tokens": int(lengths.max()),
        "padded_shapes": [list(s) for s in timing.padded_shapes],
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
        note=f"texts {lengths.mean():.0f} tokens mean, max {lengths.max()}: "
        f"padded {list(timing.padded_shapes)}; tokenise {timing.tokenize_ms:.1f} ms + "
        f"compute {timing.compute_ms:.1f} ms per call",
    )
    table.add("1", "model with tokenisation, 1 text per call", one)
    return runner


async def measure_pipeline(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    limit: float,
    results: dict[str, Any],
    table: Table,
) -> float:
    """Row 2 (and scaling's 4-partition/1-worker point): saturation, backfill, paced latency."""
    logs = args.log_dir
    topics = await topics_for(broker.bootstrap, 4, "main")
    out: dict[str, Any] = {"partitions": 4, "workers": 1, "served": SERVED}
    with workers(broker.bootstrap, partitions=4, count=1, topics=topics, log_dir=logs) as group:
        out["worker_start_s"] = round(group.start_s, 1)
        await warm(broker.bootstrap, group)
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
            ratio=sat1.inputs_per_s / limit,
            ratio_of="limit",
            note=f"target >= 0.90x: {met(sat1.inputs_per_s / limit >= 0.9)}; "
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
            ratio=sat64.inputs_per_s / limit,
            ratio_of="limit",
            note=f"target >= 0.90x: {met(sat64.inputs_per_s / limit >= 0.9)}; "
            f"{sat64.messages} msgs",
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
        full_batch_ms = 1000 * SETTINGS.max_batch / limit
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
            out["profile"] = await profile_worker(args, broker, group, limit)
    results["pipeline"] = out
    return sat1.inputs_per_s


async def measure_peers(
    args: argparse.Namespace,
    broker: EmbeddedBroker,
    runner: Any,
    limit: float,
    kinfer_rate: float,
    results: dict[str, Any],
    table: Table,
) -> None:
    """Row 3: aiokafka per-message loop, Quix Streams, sentence-transformers."""
    out: dict[str, Any] = {}
    one = results["limit"]["with_tokenisation_one_text"]["inputs_per_s"]
    aiok = await peers.run_aiokafka_peer(
        broker.bootstrap, runner, seconds=args.seconds / 2, expected_rate=one, partitions=4
    )
    out["aiokafka_loop"] = aiok.summary()
    ratio = kinfer_rate / aiok.inputs_per_s if aiok.inputs_per_s else float("nan")
    table.add(
        "3",
        "(a) aiokafka loop, one message at a time, same model",
        aiok.inputs_per_s,
        ratio=ratio,
        ratio_of="kinfer/peer",
        note=f"target kinfer >= 3x: {met(ratio >= 3)}; {aiok.cpu_ms_per_request:.1f} "
        "CPU-ms/req (driver included)",
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
            ratio=kinfer_rate / quix.inputs_per_s,
            ratio_of="kinfer/peer",
            note=f"quixstreams {info.get('quixstreams')}, librdkafka "
            f"{info.get('librdkafka')}; {quix.cpu_ms_per_request:.1f} CPU-ms/req",
        )
    else:
        table.add("3", "(b) Quix Streams app, consume -> model -> produce", None, note=why)
    st, why = await asyncio.to_thread(
        peers.run_sentence_transformers, args.st_venv, seconds=args.tok_seconds
    )
    out["sentence_transformers"] = st or {"why": why}
    if st is not None:
        for size, rate in st["sentences_per_s"].items():
            table.add(
                "3",
                f"(c) sentence-transformers (PyTorch CPU) alone, batch {size}",
                rate,
                ratio=kinfer_rate / rate,
                ratio_of="kinfer/peer",
                note=f"torch {st['torch']}, {st['torch_threads']} threads; "
                f"vs kinfer limit {limit / rate:.2f}x",
            )
    else:
        table.add("3", "(c) sentence-transformers (PyTorch CPU) alone", None, note=why)
    results["peers"] = out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    table = Table()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "gpu": "none (JAX_PLATFORMS=cpu)",
        },
        "command": "python -m tests.benchmarks.run" + (" --quick" if args.quick else ""),
        "texts": list(TEXTS),
    }
    started = time.perf_counter()
    with EmbeddedBroker(silent=True) as broker:
        print(f"embedded Tansu broker at {broker.bootstrap}; logs in {args.log_dir}", flush=True)
        others = Contention()
        others.start()
        others.mark()
        runner = measure_limit(args, results, table)
        busy: dict[str, float] = {"1": others.mark()}
        limit = results["limit"]["with_tokenisation"]["inputs_per_s"]
        kinfer_rate = await measure_pipeline(args, broker, limit, results, table)
        busy["2"] = others.mark()
        await measure_peers(args, broker, runner, limit, kinfer_rate, results, table)
        busy["3"] = others.mark()
        await measure_scaling(args, broker, limit, kinfer_rate, results, table)
        busy["4"] = others.mark()
        await others.stop()
        runner.close()
    results["others_cpu_share"] = {k: round(v, 3) for k, v in busy.items()}
    for row in table.rows:
        share = busy.get(row["section"], 0.0)
        row["others_cpu_pct"] = round(100 * share, 1)
    results["table"] = table.rows
    results["total_s"] = round(time.perf_counter() - started, 1)
    print()
    print(table.render())
    print(
        "\nother processes on this machine (not this benchmark) used, of all cores: "
        + ", ".join(f"section {k}: {100 * v:.0f}%" for k, v in busy.items())
    )
    profile = results["pipeline"].get("profile")
    if profile:
        print("\nworker profile, 1 input/msg saturated:")
        print(
            f"  CPU-ms per request by thread: {json.dumps(profile['thread_cpu_ms_per_request'])}"
            f"; broker {profile['broker_cpu_ms_per_request']} CPU-ms/req"
        )
        spy = profile.get("py_spy", {})
        print(f"  py-spy, share of Python samples by stage: {json.dumps(spy.get('stages', spy))}")
    print(f"\ntotal {results['total_s']} s; JSON: {args.json}")
    return results


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
    parser.add_argument("--seconds", type=float, help="length of each pipeline scenario")
    parser.add_argument("--profile-seconds", type=float, help="py-spy run; 0 skips it")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = args.seconds or 4.0
        args.raw_seconds, args.tok_seconds = 0.5, 1.5
        args.profile_seconds = 4.0 if args.profile_seconds is None else args.profile_seconds
        args.scaling = [(1, 1), (4, 2)]
    else:
        args.seconds = args.seconds or 10.0
        args.raw_seconds, args.tok_seconds = 1.0, 3.0
        args.profile_seconds = 8.0 if args.profile_seconds is None else args.profile_seconds
        args.scaling = [(1, 1), (2, 1), (1, 2), (2, 2), (4, 2)]
    args.log_dir = log_dir()
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
