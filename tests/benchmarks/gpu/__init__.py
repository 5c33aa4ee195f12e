"""The GPU bench recipe: a bundle made here, a script run on a bare JAX + CUDA machine.

See docs/performance.md ("GPU recipe") and tests/benchmarks/gpu/run.sh.
"""
