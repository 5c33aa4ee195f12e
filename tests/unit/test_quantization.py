"""Int8 weight-only MiniLM: the quantisation round trip, the layer, parity and the version."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner
from flax import nnx

from models.bert import load_encoder
from models.bert.quantize import (
    INT8_MAX,
    Int8Kernel,
    Int8Linear,
    dequantize_int8,
    parameter_bytes,
    quantize_int8,
)
from models.errors import UnsupportedQuantizationError
from models.minilm.servable import build
from models.registry import load
from models.repository import SHIPPED_REPOSITORY, read_manifest
from models.runner import ModelRunner, RunnerConfig

FIXTURES = Path(__file__).parents[1] / "fixtures"
PARITY = FIXTURES / "minilm_parity.json"
TINY = FIXTURES / "tiny-bert"
INT8 = "int8-weight-only"
#: Measured against the fp32 embeddings on the parity fixture (60 texts, 2026-12-01): min
#: 0.99649 (the empty text), mean 0.99917; most of the error is the feed-forward output dense
#: layer's. The bounds sit just under, leaving room for other CPUs' XLA kernels.
INT8_MIN_COSINE = 0.995
INT8_MEAN_COSINE = 0.999


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(
        np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    )


def test_the_round_trip_is_within_half_a_step_per_channel() -> None:
    rng = np.random.default_rng(0)
    kernel = rng.normal(0.0, 0.05, size=(96, 40)).astype(np.float32)
    kernel[3, 7] = 2.5  # an outlier widens only its own channel's step
    kernel[:, 11] = 0.0
    values, scales = quantize_int8(kernel)
    assert values.dtype == np.int8
    assert scales.dtype == np.float32
    assert values.shape == kernel.shape
    assert scales.shape == (40,)
    assert np.abs(values).max() <= INT8_MAX
    # each channel's largest weight lands on +-127 exactly
    peaks = np.abs(values).max(axis=0)
    assert np.all(np.delete(peaks, 11) == INT8_MAX)
    assert scales[11] == 1.0
    assert np.all(values[:, 11] == 0)
    restored = np.asarray(dequantize_int8(jnp.asarray(values), jnp.asarray(scales)))
    error = np.abs(restored - kernel)
    assert np.all(error <= scales[None, :] / 2 * (1 + 1e-5))
    assert scales[7] > 10 * np.median(scales)
    assert np.abs(error[:, np.arange(40) != 7]).max() < 0.2 / INT8_MAX  # others keep a fine step


def test_quantize_refuses_a_kernel_that_is_not_2d() -> None:
    with pytest.raises(ValueError, match=r"expected an \(in, out\) kernel"):
        quantize_int8(np.zeros((2, 3, 4), dtype=np.float32))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_int8_linear_computes_with_the_dequantised_kernel(dtype: jnp.dtype) -> None:
    linear = nnx.Linear(64, 24, dtype=dtype, rngs=nnx.Rngs(1))
    assert linear.bias is not None
    linear.bias[...] = jnp.linspace(-1.0, 1.0, 24)
    quantized = Int8Linear.from_linear(linear)
    assert isinstance(quantized.kernel, Int8Kernel)
    assert quantized.kernel[...].dtype == jnp.int8
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5, 64)), dtype=jnp.float32)
    dense = dequantize_int8(quantized.kernel[...], quantized.scale[...])
    expected = np.asarray(x @ dense + linear.bias[...])
    out = quantized(x)
    assert out.dtype == dtype
    assert out.shape == (3, 5, 24)
    tolerance = 1e-4 if dtype == jnp.float32 else 5e-2
    np.testing.assert_allclose(np.asarray(out, dtype=np.float32), expected, atol=tolerance)
    float_out = np.asarray(linear(x), dtype=np.float32)
    assert 0 < np.abs(np.asarray(out, dtype=np.float32) - float_out).max() < 0.1


def test_an_unknown_quantization_is_refused_before_the_weights_are_read() -> None:
    with pytest.raises(UnsupportedQuantizationError, match=r"'int4'.*none, int8-weight-only"):
        load_encoder(TINY, name="tiny-bert", version="tiny-bert@test", quantization="int4")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_any_bert_folder_quantizes_through_the_registry(dtype: str) -> None:
    config = RunnerConfig(batch_buckets=(1, 4), seq_buckets=(32,), dtype=dtype)
    texts = ["a short one", "Kafka partitions order records by key.", ""]
    reference = load("tiny-bert", config=config, model_dir=TINY)
    int8 = load("tiny-bert", config=config, model_dir=TINY, quantization=INT8)
    try:
        expected, _ = reference.infer(texts)
        out, _ = int8.infer(texts)
    finally:
        reference.close()
        int8.close()
    cosine = cosines(out, expected)
    assert cosine.min() >= 0.999
    assert cosine.min() < 0.9999999  # the int8 kernels were used


@pytest.mark.timeout(300)
def test_int8_minilm_stays_within_its_parity_bound_and_holds_int8_kernels() -> None:
    cases = json.loads(PARITY.read_text(encoding="utf-8"))["cases"]
    expected = np.asarray([case["embedding"] for case in cases], dtype=np.float32)
    servable = build(quantization=INT8)
    assert servable.quantization == INT8
    runner = ModelRunner(servable, RunnerConfig(batch_buckets=(1, 8), seq_buckets=(32, 256)))
    try:
        out, _ = runner.infer([case["text"] for case in cases])
    finally:
        runner.close()
    assert out.dtype == np.float32
    cosine = cosines(out, expected)
    assert cosine.min() >= INT8_MIN_COSINE
    assert cosine.mean() >= INT8_MEAN_COSINE
    assert cosine.min() < 0.9999  # it really used int8 kernels (fp32 reaches 0.9999998)
    leaves = jax.tree.leaves(servable.params)
    kernels = [leaf for leaf in leaves if leaf.dtype == jnp.int8]
    assert len(kernels) == 6 * 6  # 6 layers x (query, key, value, attention out, in, out)
    assert {leaf.dtype for leaf in leaves} == {jnp.dtype(jnp.int8), jnp.dtype(jnp.float32)}
    as_float32 = 4 * sum(leaf.size for leaf in leaves)
    assert parameter_bytes(servable.params) < 0.66 * as_float32  # 58.5 MB instead of 90.3


def test_the_int8_version_is_declared_in_the_shipped_repository() -> None:
    base = read_manifest(SHIPPED_REPOSITORY / "minilm" / "0.1.0" / "manifest.toml").manifest
    folder = read_manifest(SHIPPED_REPOSITORY / "minilm" / "0.1.0-int8" / "manifest.toml")
    manifest = folder.manifest
    assert (manifest.quantization, manifest.dtype) == (INT8, "float32")
    assert manifest.files == base.files  # quantised at load time from the same float files
    assert "default" not in manifest.aliases  # fp32 stays the default version
    assert manifest.metrics["parity_min_cosine"] >= INT8_MIN_COSINE
    assert manifest.metrics["parity_mean_cosine"] >= INT8_MEAN_COSINE


def test_kinfer_models_lists_the_int8_version() -> None:
    from streams.cli import main

    result = CliRunner().invoke(main, ["models", "--repository", str(SHIPPED_REPOSITORY)])
    assert (
        "minilm 0.1.0-int8 (alias int8): bert-encoder, sentence-embedding, float32 "
        in result.output
    )
    line = next(row for row in result.output.splitlines() if "0.1.0-int8" in row)
    assert "int8-weight-only" in line
    assert line.endswith(": valid")
    assert "0.1.0-bf16" in result.output
    assert "int8-weight-only" not in result.output.replace(line, "")
