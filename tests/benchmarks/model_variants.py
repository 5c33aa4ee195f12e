"""Model CPU per text, side by side in one process: packing on and off, fp32, bf16 and int8.

    python -m tests.benchmarks.model_variants [--texts 224] [--repeats 3]

Prints texts per CPU-second (process CPU time, which a busy machine distorts far less than wall
time) for each variant, interleaved repetition by repetition, and bf16's and int8's cosine to
fp32 on the parity fixture. "pack 32" is one 17-token text per 32-token row: padding, as
before packing.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.registry import load
from models.runner import ModelRunner, RunnerConfig
from tests.benchmarks.common import inputs_for

FIXTURE = Path(__file__).parents[1] / "fixtures" / "minilm_parity.json"


def variants() -> dict[str, ModelRunner]:
    """The runners compared: packing length and compute dtype."""
    return {
        "fp32, pack 32 (padding)": load(
            "minilm", config=RunnerConfig(batch_buckets=(1, 4, 16, 64), pack_length=32)
        ),
        "fp32, pack 64": load("minilm", config=RunnerConfig(pack_length=64)),
        "fp32, pack 128 (default)": load("minilm", config=RunnerConfig()),
        "bf16, pack 128": load("minilm", config=RunnerConfig(dtype="bfloat16")),
        "int8 weight-only, pack 128": load(
            "minilm", config=RunnerConfig(), quantization="int8-weight-only"
        ),
    }


def variant_cosine(fp32: ModelRunner, variant: ModelRunner) -> tuple[float, float]:
    """Min and mean cosine of a variant (bf16, int8) to fp32 on the parity fixture's texts."""
    texts = [case["text"] for case in json.loads(FIXTURE.read_text(encoding="utf-8"))["cases"]]
    reference, _ = fp32.infer(texts)
    low, _ = variant.infer(texts)
    cosine = np.sum(reference * low, axis=1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(low, axis=1)
    )
    return float(cosine.min()), float(cosine.mean())


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--texts", type=int, default=224, help="texts per call")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    args = parser.parse_args(argv)
    texts = inputs_for(0, args.texts)
    runners = variants()
    for runner in runners.values():
        runner.warm_up()
    per_cpu: dict[str, list[float]] = {name: [] for name in runners}
    efficiency: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, runner in runners.items():
            started = time.process_time()
            _, timing = runner.infer(texts)
            per_cpu[name].append(len(texts) / (time.process_time() - started))
            efficiency[name] = timing.padding_efficiency
    print(f"{len(texts)} texts per call, {args.repeats} interleaved repetitions")
    print("| variant | texts per CPU-second | real / computed tokens |")
    print("|---|---:|---:|")
    for name, values in per_cpu.items():
        print(f"| {name} | {' / '.join(f'{v:.0f}' for v in values)} | {efficiency[name]:.0%} |")
    fp32 = runners["fp32, pack 128 (default)"]
    for label, name in (("bf16", "bf16, pack 128"), ("int8", "int8 weight-only, pack 128")):
        low, mean = variant_cosine(fp32, runners[name])
        print(f"{label} vs fp32 cosine on the parity fixture: min {low:.5f}, mean {mean:.5f}")
    for runner in runners.values():
        runner.close()


if __name__ == "__main__":
    main()
