"""Regenerate the gateway's gRPC modules from ``open_inference_grpc.proto``: ``make proto``.

Runs grpcio-tools' protoc (a dev dependency, pinned in pyproject.toml so that the output is
reproducible) with the repository root as the include path, so the generated modules import
each other as ``streams.gateway.proto.*``. Then one line is changed: the file's descriptors go
into a pool of their own instead of protobuf's default pool. The protocol's messages are named
``inference.*`` by every implementation (tritonclient's own generated modules register the
same names), and the default pool refuses a second definition of a name, so without this a
process could not import both kinfer's gateway and tritonclient's gRPC client.

``python -m streams.gateway.proto.generate [--check]``: ``--check`` writes nothing and exits 1
when the committed modules differ from what protoc makes now (tests/unit runs it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PROTO = Path(__file__).resolve().parent / "open_inference_grpc.proto"
ROOT = PROTO.parents[3]
#: what protoc makes from PROTO, relative to the include root
OUTPUTS = tuple(
    PROTO.with_name(PROTO.stem + suffix).relative_to(ROOT)
    for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
)
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = "_descriptor_pool.DescriptorPool().AddSerializedFile("


def generate(out: Path) -> list[Path]:
    """Write the generated modules under ``out`` (laid out as under the repository root)."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO.relative_to(ROOT)),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    module = out / OUTPUTS[0]
    text = module.read_text()
    if text.count(_DEFAULT_POOL) != 1:
        raise RuntimeError(f"{module}: expected one {_DEFAULT_POOL!r}; has protoc changed?")
    module.write_text(text.replace(_DEFAULT_POOL, _OWN_POOL))
    return [out / path for path in OUTPUTS]


def stale() -> list[Path]:
    """The committed generated modules that differ from what protoc makes now."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = generate(Path(scratch))
        return [
            ROOT / path
            for path, made in zip(OUTPUTS, fresh, strict=True)
            if not (ROOT / path).is_file() or (ROOT / path).read_bytes() != made.read_bytes()
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale modules")
    options = parser.parse_args(argv)
    if options.check:
        outdated = stale()
        for path in outdated:
            print(f"{path} is stale: run `make proto`", file=sys.stderr)
        return 1 if outdated else 0
    for path in generate(ROOT):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
