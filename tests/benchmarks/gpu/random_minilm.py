"""A MiniLM folder with random weights: every figure it produces is labelled RANDOM WEIGHTS.

    python -m tests.benchmarks.gpu.random_minilm --from SRC --out DIR/minilm-RANDOM-WEIGHTS

(SRC: a folder with MiniLM's config.json and tokenizer.json, e.g. .gpu-bundle/minilm.)

Writes ``config.json`` and ``tokenizer.json`` (copied from ``--from``) and a
``model.safetensors`` of float32 random weights with exactly the tensor names and shapes that
``models/minilm/weights.py`` loads (read from its ``tensor_map``, so they follow that file),
in Hugging Face's layout (a linear layer's weight as (out, in)). For speed figures only: the
shapes, and so the compute, are the real model's; the embeddings are meaningless. The folder
name is what the served version shows (``all-MiniLM-L6-v2@minilm-RANDOM-WEIGHTS``), so keep
RANDOM-WEIGHTS in it.

Values: weights and embeddings N(0, 0.02) as BERT initialises them, LayerNorm scales 1, biases
0, from a fixed seed, so activations stay finite at any depth.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

#: The folder name the recipe uses; the served version string ends with it.
FOLDER_NAME = "minilm-RANDOM-WEIGHTS"
#: Files copied from the real model's folder.
COPIED = ("config.json", "tokenizer.json")


def _file_shape(
    param_shape: tuple[int, ...], transform: Callable[[np.ndarray], np.ndarray]
) -> tuple[int, ...]:
    """The stored tensor's shape: the one that ``transform`` maps to ``param_shape``."""
    for candidate in (param_shape, param_shape[::-1]):
        if transform(np.empty(candidate, dtype=np.float32)).shape == param_shape:
            return candidate
    raise ValueError(f"no stored shape maps to {param_shape}")


def tensor_shapes(config_path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor ``models.minilm.weights.load_weights`` reads, and its stored shape."""
    from flax import nnx

    from models.minilm.config import MiniLMConfig
    from models.minilm.model import MiniLM
    from models.minilm.weights import tensor_map

    config = MiniLMConfig.from_json(config_path)
    model = nnx.eval_shape(lambda: MiniLM(config, rngs=nnx.Rngs(0)))  # shapes, no memory
    return {
        name: _file_shape(tuple(param.get_value().shape), transform)
        for name, param, transform in tensor_map(model)
    }


def random_tensors(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """float32 tensors: LayerNorm weights 1, biases 0, the rest N(0, 0.02)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in sorted(shapes.items()):
        if name.endswith(".bias"):
            out[name] = np.zeros(shape, dtype=np.float32)
        elif name.endswith("LayerNorm.weight"):
            out[name] = np.ones(shape, dtype=np.float32)
        else:
            out[name] = (rng.standard_normal(size=shape, dtype=np.float32) * 0.02).astype(
                np.float32
            )
    return out


def write_folder(source: Path, out: Path, seed: int = 0) -> dict[str, object]:
    """Write the random-weights folder ``out`` (config and tokenizer from ``source``)."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copy2(source / name, out / name)
    shapes = tensor_shapes(out / "config.json")
    tensors = random_tensors(shapes, seed)
    save_file(tensors, str(out / "model.safetensors"), metadata={"kinfer": "RANDOM WEIGHTS"})
    info = {
        "what": "RANDOM WEIGHTS of all-MiniLM-L6-v2's shapes, for speed figures only",
        "seed": seed,
        "tensors": len(tensors),
        "parameters": int(sum(array.size for array in tensors.values())),
    }
    (out / "RANDOM-WEIGHTS.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        required=True,
        help="folder with config.json, tokenizer.json",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help=f"the folder to write (name it {FOLDER_NAME})"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if "RANDOM-WEIGHTS" not in args.out.name:
        parser.error(f"the folder's name must say RANDOM-WEIGHTS (e.g. {FOLDER_NAME})")
    started = time.perf_counter()
    info = write_folder(args.source, args.out, args.seed)
    print(
        f"{args.out}: {info['tensors']} tensors, {info['parameters']:,} random float32 "
        f"parameters in {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
