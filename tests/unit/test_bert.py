"""The generic BERT encoder on a second checkpoint (tiny-bert: hidden 128, CLS pooling).

Parity with sentence-transformers through the packed runner, the poolings on packed rows, the
tokeniser's fast path on another vocabulary and pipeline variants, and serving any folder
through the registry.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from models.bert import BertEncoderServable, load_encoder
from models.bert.config import read_spec
from models.bert.model import segment_cls, segment_max, segment_mean
from models.bert.pooling import Pooling
from models.bert.tokenizer import BertTokenizer
from models.errors import ModelFolderError
from models.minilm.preprocess import MiniLMTokenizer
from models.minilm.servable import weights_dir
from models.registry import load
from models.runner import ModelRunner, RunnerConfig

FIXTURES = Path(__file__).parents[1] / "fixtures"
TINY = FIXTURES / "tiny-bert"
PARITY = FIXTURES / "tiny_bert_parity.json"
MIN_COSINE = 0.9999
CONFIG = RunnerConfig(batch_buckets=(1, 8), seq_buckets=(32, 128))


@pytest.fixture(scope="module")
def parity() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PARITY.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def servable() -> BertEncoderServable:
    return load_encoder(TINY, name="tiny-bert", version="tiny-bert@test")


@pytest.fixture(scope="module")
def runner(servable: BertEncoderServable) -> Iterator[ModelRunner]:
    model = ModelRunner(servable, CONFIG)
    yield model
    model.close()


def cosines(out: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.sum(out * expected, axis=1) / (
        np.linalg.norm(out, axis=1) * np.linalg.norm(expected, axis=1)
    )


def test_the_servable_takes_its_shape_from_the_folder(servable: BertEncoderServable) -> None:
    assert (servable.name, servable.version) == ("tiny-bert", "tiny-bert@test")
    assert (servable.output_dim, servable.max_seq_len, servable.pad_id) == (128, 128, 0)
    assert servable.min_tokens == 2
    assert servable.pooling == Pooling("cls", normalize=False)
    tokenizer = servable.tokenizer
    assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.id_limit) == (2, 3, 4096)
    assert tokenizer.has_fast_path
    layer = servable.params["layers"][1]["intermediate"]["kernel"]
    assert layer.shape == (128, 512)


def test_parity_with_sentence_transformers_through_the_packed_runner(
    runner: ModelRunner, parity: dict[str, Any]
) -> None:
    cases = parity["cases"]
    assert len(cases) >= 50
    texts = [case["text"] for case in cases]
    assert runner.tokenize(texts).lengths.tolist() == [case["tokens"] for case in cases]
    expected = np.asarray([case["embedding"] for case in cases], dtype=np.float32)
    out, timing = runner.infer(texts)  # packed beside each other
    assert any(rows > 1 for rows, _ in timing.padded_shapes)
    assert timing.padding_efficiency > 0.8
    cosine = cosines(out, expected)
    worst = int(np.argmin(cosine))
    assert cosine[worst] >= MIN_COSINE, f"case {worst} {cases[worst]['text'][:40]!r}"
    # not normalised (no Normalize in modules.json): the lengths match too
    np.testing.assert_allclose(
        np.linalg.norm(out, axis=1), np.linalg.norm(expected, axis=1), rtol=1e-4
    )


@pytest.mark.parametrize(
    ("mode", "key", "matches"), [("max", "max_pooled", True), ("mean", "embedding", False)]
)
def test_other_poolings_of_the_same_encoder(
    parity: dict[str, Any], mode: str, key: str, matches: bool
) -> None:
    """Max pooling matches sentence-transformers' max; mean pooling must not pass for CLS."""
    spec = dataclasses.replace(read_spec(TINY), pooling=Pooling(mode))  # type: ignore[arg-type]
    cases = parity["cases"]
    expected = np.asarray([case[key] for case in cases], dtype=np.float32)
    with ModelRunner(BertEncoderServable(spec, name="t", version="t"), CONFIG) as model:
        out, _ = model.infer([case["text"] for case in cases])
    cosine = cosines(out, expected)
    if matches:
        assert cosine.min() >= MIN_COSINE
    else:
        assert cosine.mean() < 0.9  # the parity test tells poolings apart


def test_packed_poolings_pick_each_segment_s_own_tokens() -> None:
    hidden = jnp.arange(2 * 6 * 2, dtype=jnp.float32).reshape(2, 6, 2)
    segments = jnp.asarray([[1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 1, 1]], jnp.int32)
    positions = jnp.asarray([[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 4, 5]], jnp.int32)
    h = np.asarray(hidden)
    cls = np.asarray(segment_cls(hidden, segments, positions, 3))
    np.testing.assert_array_equal(cls, [h[0, 0], h[0, 2], [0, 0], h[1, 0], [0, 0], [0, 0]])
    peak = np.asarray(segment_max(-hidden, segments, 3))  # negated: the max is the first
    np.testing.assert_array_equal(peak, [-h[0, 0], -h[0, 2], [0, 0], -h[1, 0], [0, 0], [0, 0]])
    mean = np.asarray(segment_mean(hidden, segments, 3))
    np.testing.assert_allclose(mean[[0, 1, 3]], [h[0, :2].mean(0), h[0, 2:5].mean(0), h[1].mean(0)])
    assert not mean[[2, 4, 5]].any()


@cache
def tiny_tokenizer() -> BertTokenizer:
    return BertTokenizer(TINY / "tokenizer.json", 128)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=8))
def test_the_fast_path_gives_the_library_ids_on_a_reduced_vocabulary(texts: list[str]) -> None:
    tokenizer = tiny_tokenizer()
    fast, library = tokenizer(texts), tokenizer(texts, fast=False)
    assert fast.ids.tolist() == library.ids.tolist()
    assert fast.lengths.tolist() == library.lengths.tolist()


ADDED = ["hello [MASK] world", "[CLS]", "a[SEP]b", "[UNK] and [PAD]", "[mask] lower", "[unused1]"]


@pytest.mark.parametrize(("which", "mask_id"), [("tiny", 4), ("minilm", 103)])
def test_texts_holding_added_tokens_take_the_library_path(which: str, mask_id: int) -> None:
    if which == "tiny":
        tokenizer: BertTokenizer = tiny_tokenizer()
    else:
        tokenizer = MiniLMTokenizer(weights_dir() / "tokenizer.json")
    texts = [*ADDED, "plain text", "Tokenisation of KAFKAesque JAXification!"]
    fast, library = tokenizer(texts), tokenizer(texts, fast=False)
    assert fast.ids.tolist() == library.ids.tolist()
    assert fast.lengths.tolist() == library.lengths.tolist()
    assert mask_id in tokenizer([ADDED[0]]).ids.tolist()  # [MASK] matched whole, as ST does


MIXED = [
    "Hello World",
    "UPPER lower MiXeD",
    "  Padded\tTabs\n",
    "x" * 150,
    "Kafka's JAX-ification!",
]


def _variant(tmp_path: Path, **normalizer: Any) -> Path:
    config = json.loads((TINY / "tokenizer.json").read_text())
    config["normalizer"].update(normalizer)
    config["post_processor"] = {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(config))
    return path


def test_a_cased_bert_processing_pipeline_keeps_an_exact_fast_path(tmp_path: Path) -> None:
    cased = BertTokenizer(_variant(tmp_path, lowercase=False), 32)
    assert cased.has_fast_path
    assert (cased.cls_id, cased.sep_id) == (2, 3)
    fast, library = cased(MIXED), cased(MIXED, fast=False)
    assert fast.ids.tolist() == library.ids.tolist()
    assert fast.ids.tolist() != tiny_tokenizer()(MIXED, 32).ids.tolist()  # case matters here


def test_do_lower_case_lower_cases_a_cased_pipeline(tmp_path: Path) -> None:
    lowered = BertTokenizer(_variant(tmp_path, lowercase=False), 32, lowercase=True)
    expected = tiny_tokenizer()(MIXED, 32).ids.tolist()
    assert lowered(MIXED).ids.tolist() == expected
    assert lowered(MIXED, fast=False).ids.tolist() == expected


def test_weights_saved_with_a_bert_prefix_load(
    tmp_path: Path, servable: BertEncoderServable
) -> None:
    """A checkpoint saved from BertForMaskedLM and friends names its tensors ``bert.*``."""
    spec = read_spec(TINY)
    tensors = {f"bert.{name}": array for name, array in load_file(str(spec.weights_path)).items()}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "tokenizer.json").symlink_to(spec.tokenizer_path)
    prefixed = BertEncoderServable(
        dataclasses.replace(spec, transformer_dir=tmp_path), name="t", version="t"
    )
    ours = servable.params["layers"][1]["output"]["bias"][...]
    np.testing.assert_array_equal(prefixed.params["layers"][1]["output"]["bias"][...], ours)


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(tmp_path: Path) -> None:
    spec = read_spec(TINY)
    small = dataclasses.replace(spec, config=dataclasses.replace(spec.config, vocab_size=1000))
    with pytest.raises(
        ModelFolderError, match=r"tokenizer\.json: has token ids up to 4095, beyond"
    ):
        BertEncoderServable(small, name="t", version="t")


def test_the_registry_serves_any_folder_under_the_name_given() -> None:
    config = RunnerConfig(batch_buckets=(1,), seq_buckets=(32,))
    with load("tiny-bert", config=config, model_dir=TINY) as runner:
        assert (runner.name, runner.version, runner.output_dim) == (
            "tiny-bert",
            "tiny-bert@tiny-bert",
            128,
        )
    with load("minilm", config=config, model_dir=TINY) as runner:  # KINFER_MODEL_DIR's default name
        assert (runner.version, runner.output_dim) == ("all-MiniLM-L6-v2@tiny-bert", 128)
        assert runner.servable.max_seq_len == 128


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_weights_are_widened(
    tmp_path: Path, servable: BertEncoderServable, dtype: str
) -> None:
    spec = read_spec(TINY)
    half = np.dtype(jnp.dtype(dtype))
    tensors = {name: a.astype(half) for name, a in load_file(str(spec.weights_path)).items()}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "tokenizer.json").symlink_to(spec.tokenizer_path)
    loaded = BertEncoderServable(
        dataclasses.replace(spec, transformer_dir=tmp_path), name="t", version="t"
    )
    kernel = loaded.params["layers"][0]["attention"]["query"]["kernel"][...]
    assert kernel.dtype == jnp.float32
    ours = servable.params["layers"][0]["attention"]["query"]["kernel"][...]
    np.testing.assert_allclose(kernel, ours, rtol=1e-2, atol=1e-3)
