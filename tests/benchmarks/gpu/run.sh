#!/usr/bin/env bash
# The GPU bench recipe, on a machine with Python, JAX (with CUDA) and Flax, and nothing else of
# kinfer's: no faust, aiokafka, broker or MiniLM weights (docs/performance.md, "GPU recipe").
#
#   make gpu-bundle                          # on the dev machine: .gpu-bundle/ (git-ignored)
#   device tool: run with carry [".gpu-bundle"] and command "bash tests/benchmarks/gpu/run.sh"
#   JAX_PLATFORMS=cpu PYTHON=/path/to/bare/python bash tests/benchmarks/gpu/run.sh --quick
#                                            # the CPU proof: tiny shapes, short runs
#
# Arguments go to tests/benchmarks/gpu/recipe.py (--quick, --processes 1,2,4, --seconds 10).
# Results: $OUT/recipe.txt, recipe.json, workers.log, run.log ($OUT: the device tool's, else
# ./gpu-results). The whole run is bounded by KINFER_GPU_RECIPE_TIMEOUT_S (default 540 s).
#
# The bundle's wheels are installed (--no-index --no-deps) into a folder put first on
# PYTHONPATH, so the machine's own JAX and CUDA plugin stay the ones imported. Not a
# `python -m venv --system-site-packages`: made from a Python that is itself a venv (the H200
# machine's python3 is /opt/torch/.venv/bin/python3), such a venv sees the base interpreter's
# site-packages, not that venv's, so not its JAX.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PYTHON=${PYTHON:-python3}
BUNDLE=${KINFER_GPU_BUNDLE:-.gpu-bundle}
OUT=${OUT:-$PWD/gpu-results}
SITE=${KINFER_GPU_SITE:-/tmp/kinfer-gpu-site}
mkdir -p "$OUT"
if [ ! -f "$BUNDLE/requirements.txt" ]; then
  echo "no $BUNDLE/requirements.txt: run 'make gpu-bundle' first, and carry $BUNDLE" >&2
  exit 2
fi

recipe() {
  "$PYTHON" -c 'import sys; print("python", sys.version.split()[0], sys.executable)'
  "$PYTHON" -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__)'
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  fi
  local started
  started=$(date +%s)
  rm -rf "$SITE"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --disable-pip-version-check --target "$SITE" --find-links "$BUNDLE/wheels" \
    -r "$BUNDLE/requirements.txt"
  echo "bundle installed in $SITE in $(($(date +%s) - started)) s"
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONUNBUFFERED=1
  timeout -k 10 "${KINFER_GPU_RECIPE_TIMEOUT_S:-540}" \
    "$PYTHON" -m tests.benchmarks.gpu.recipe --bundle "$BUNDLE" --out "$OUT" "$@"
}

recipe "$@" 2>&1 | tee "$OUT/run.log"
