"""The model alone on this machine's accelerator: raw forward per shape, and with tokenisation.

    python -m tests.benchmarks.gpu.model_rows --model-dir DIR --dtype bfloat16 --json rows.json

Runs in its own process (the recipe starts one per dtype), so the device memory it takes is
given back before the workers start. The runner's shapes come from the ``KINFER_*`` settings
in the environment (``streams.serving.runner_config``), the same ones the workers get, so
the end-to-end rows are compared with the model on the same buckets. The measurements are
``tests/benchmarks/bench_model.py``'s; the texts are the bench's 8 sentences.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streams.processes import apply_accelerator_env
from streams.settings import Settings


def measure(model_dir: Path, dtype: str, seconds: float, texts_per_call: int) -> dict[str, Any]:
    """Warm-up, raw sentences/s per compiled shape, and sentences/s of ``infer`` on texts."""
    import jax

    from models.minilm.servable import MODEL_NAME, MiniLMServable
    from models.runner import ModelRunner
    from streams.serving import runner_config
    from tests.benchmarks.bench_model import measure_raw, measure_with_tokenisation
    from tests.benchmarks.gpu.recipe import texts

    settings = Settings(dtype=dtype)
    config: Any = runner_config(settings)
    started = time.perf_counter()
    servable = MiniLMServable(model_dir, dtype=dtype, version=f"{MODEL_NAME}@{model_dir.name}")
    runner = ModelRunner(servable, config)
    runner.warm_up()
    warm_up_s = time.perf_counter() - started
    raw = []
    for batch, seq in config.shapes:
        rate = measure_raw(runner, batch, seq, seconds)
        raw.append({"batch": batch, "seq": seq, "inputs_per_s": rate})
        print(f"  {dtype} raw batch {batch:>5} x seq {seq:>4}: {rate:>12,.0f} inputs/s", flush=True)
    batch_texts = texts(0, texts_per_call)
    with_tok = measure_with_tokenisation(runner, batch_texts, seconds)
    print(f"  {dtype} with tokenisation, {texts_per_call} texts per call: {with_tok:,.0f} inputs/s")
    device = jax.devices()[0]
    result = {
        "version": runner.version,
        "dtype": dtype,
        "device": f"{device.platform}: {device.device_kind}",
        "jax": jax.__version__,
        "python": platform.python_version(),
        "batch_buckets": list(config.batch_buckets),
        "seq_buckets": list(config.seq_buckets),
        "warm_up_s": round(warm_up_s, 1),
        "raw": raw,
        "with_tokenisation": {"texts_per_call": texts_per_call, "inputs_per_s": with_tok},
    }
    runner.close()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--texts-per-call", type=int, help="default: KINFER_MAX_BATCH")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    apply_accelerator_env(settings)  # as a worker does, before JAX starts
    result = measure(
        args.model_dir, args.dtype, args.seconds, args.texts_per_call or settings.max_batch
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
