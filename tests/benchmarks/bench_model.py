"""Throughput of the served model: raw jitted forward per bucket, and `infer` end to end.

    python tests/benchmarks/bench_model.py --seconds 3 --json bench-results/model.json

Raw figures run one compiled (batch, seq) executable on ready padded arrays; "with
tokenisation" runs `ModelRunner.infer` on real texts (tokenise, bucket, pad, forward, gather).
Other benchmark scripts import `measure_raw` and `measure_with_tokenisation`.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from models.registry import DEFAULT_MODEL, load
from models.runner import ModelRunner, RunnerConfig

__all__ = ["DEFAULT_TEXTS", "measure_compile", "measure_raw", "measure_with_tokenisation"]

DEFAULT_TEXTS: tuple[str, ...] = (
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog.",
    "Kafka consumer groups split partitions between workers.",
    "How do I reset my password?",
    "Inference latency dropped from 40 ms to 12 ms after batching requests together.",
    "Sentence embeddings map text to dense vectors for search and clustering.",
    "A woman is playing the violin on a busy street corner in the evening.",
    "The committee decided to postpone the vote until more evidence was available.",
)


def _timed_loop(step: Any, seconds: float) -> tuple[int, float]:
    """Call `step()` (which blocks) until `seconds` pass; return (calls, elapsed)."""
    calls = 0
    started = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds or calls == 0:
        step()
        calls += 1
        elapsed = time.perf_counter() - started
    return calls, elapsed


def measure_compile(runner: ModelRunner, batch: int, seq: int) -> float:
    """Seconds to compile (batch, seq), or 0.0 if already compiled."""
    return runner.compile_shape(batch, seq)


def measure_raw(runner: ModelRunner, batch: int, seq: int, seconds: float) -> float:
    """Sentences/s of the compiled forward alone at (batch, seq): one full-length text per row."""
    runner.compile_shape(batch, seq)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, size=(batch, seq), dtype=np.int32)
    segments = np.ones((batch, seq), dtype=np.int32)  # one text (segment 1) fills each row
    positions = np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy()
    arrays = [jax.device_put(array) for array in (ids, segments, positions)]
    runner.forward(*arrays).block_until_ready()  # the first run allocates
    calls, elapsed = _timed_loop(lambda: runner.forward(*arrays).block_until_ready(), seconds)
    return calls * batch / elapsed


def measure_with_tokenisation(runner: ModelRunner, texts: Sequence[str], seconds: float) -> float:
    """Sentences/s of `runner.infer(texts)` end to end (tokenise, pad, forward, gather)."""
    runner.infer(texts)
    calls, elapsed = _timed_loop(lambda: runner.infer(texts), seconds)
    return calls * len(texts) / elapsed


def _parse_buckets(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print a table and optionally write JSON."""
    defaults = RunnerConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch-buckets", type=_parse_buckets, default=defaults.batch_buckets)
    parser.add_argument("--seq-buckets", type=_parse_buckets, default=defaults.seq_buckets)
    parser.add_argument("--dtype", default=defaults.dtype, choices=("float32", "bfloat16"))
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--texts", type=Path, help="file with one text per line")
    parser.add_argument("--repeat", type=int, default=8, help="copies of the texts per infer call")
    parser.add_argument("--skip-raw", action="store_true", help="only measure with tokenisation")
    parser.add_argument("--json", type=Path, help="write results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    config = RunnerConfig(args.batch_buckets, args.seq_buckets, args.dtype)
    runner = load(args.model, config=config)
    texts = (
        [line for line in args.texts.read_text(encoding="utf-8").splitlines()]
        if args.texts
        else list(DEFAULT_TEXTS)
    ) * args.repeat
    shapes: list[dict[str, Any]] = []
    started = time.perf_counter()
    for batch, seq in config.shapes:
        shapes.append(
            {"batch": batch, "seq": seq, "compile_s": measure_compile(runner, batch, seq)}
        )
    runner.warm_up()
    warm_up_s = time.perf_counter() - started
    print(f"{runner.version} {args.dtype} on {jax.devices()[0].device_kind}")
    print(f"warm-up: {len(shapes)} shapes in {warm_up_s:.1f} s")
    print(f"{'batch':>6} {'seq':>5} {'compile s':>10} {'sent/s':>10}")
    for row in shapes:
        if not args.skip_raw:
            row["sentences_per_s"] = measure_raw(runner, row["batch"], row["seq"], args.seconds)
        rate = row.get("sentences_per_s", float("nan"))
        print(f"{row['batch']:>6} {row['seq']:>5} {row['compile_s']:>10.2f} {rate:>10.1f}")
    tokens = runner.servable.tokenize(texts, config.seq_buckets[-1]).lengths
    with_tok = measure_with_tokenisation(runner, texts, args.seconds)
    _, timing = runner.infer(texts)
    print(
        f"infer end to end: {with_tok:.1f} sentences/s on {len(texts)} texts per call "
        f"(mean {tokens.mean():.1f} tokens), shapes {timing.padded_shapes}"
    )
    result = {
        "model": runner.version,
        "dtype": args.dtype,
        "device": jax.devices()[0].device_kind,
        "platform": platform.platform(),
        "jax": jax.__version__,
        "batch_buckets": list(config.batch_buckets),
        "seq_buckets": list(config.seq_buckets),
        "warm_up_s": warm_up_s,
        "raw": shapes,
        "with_tokenisation": {
            "texts_per_call": len(texts),
            "mean_tokens": float(tokens.mean()),
            "sentences_per_s": with_tok,
            "padded_shapes": [list(shape) for shape in timing.padded_shapes],
            "tokenize_ms": timing.tokenize_ms,
            "compute_ms": timing.compute_ms,
        },
    }
    runner.close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
