"""Reading a BERT-family folder: what is read from which file, and refusals that name the file.

Pure Python (no weights are loaded) except where a test says so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from models.bert.config import BertConfig, read_spec
from models.bert.pooling import SENTENCE_TRANSFORMERS_DEFAULT, Pooling, read_pooling_config
from models.errors import MissingModelFileError, ModelFolderError, UnsupportedModelError
from models.minilm.config import MAX_SEQ_LEN, POOLING, MiniLMConfig
from models.minilm.servable import weights_dir

TINY = Path(__file__).parents[1] / "fixtures" / "tiny-bert"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the tiny checkpoint to break: JSON files copied, the weights linked."""
    copy = tmp_path / "tiny-bert"
    shutil.copytree(TINY, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").symlink_to(TINY / "model.safetensors")
    return copy


def edit(path: Path, **changes: Any) -> None:
    """Set (or with None, delete) top-level keys of a JSON file."""
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))


def test_the_tiny_checkpoint_is_read_from_its_files() -> None:
    spec = read_spec(TINY)
    config = spec.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (128, 2, 4)
    assert (config.intermediate_size, config.vocab_size, config.head_dim) == (512, 4096, 32)
    assert (config.max_position_embeddings, config.pad_token_id) == (512, 0)
    assert spec.pooling == Pooling("cls", normalize=False)
    assert spec.pooling_source == (TINY / "1_Pooling" / "config.json").resolve()
    # sentence-transformers 6 keeps the length in tokenizer_config.json's model_max_length
    assert spec.max_seq_length == 128
    assert not spec.lowercase


def test_minilm_is_read_from_its_package_folder() -> None:
    spec = read_spec(weights_dir())
    config = spec.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        384,
        6,
        12,
    )
    assert (config.intermediate_size, config.vocab_size) == (1536, 30522)
    assert spec.pooling == Pooling("mean", normalize=True) == POOLING  # modules.json: Normalize
    assert spec.max_seq_length == MAX_SEQ_LEN  # sentence_bert_config.json
    assert isinstance(config, BertConfig)


def test_pooling_configs_in_both_spellings(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"word_embedding_dimension": 8, "pooling_mode_cls_token": True}))
    assert read_pooling_config(path) == ("cls", 8)
    path.write_text(json.dumps({"pooling_mode_mean_tokens": False}))  # none set: mean
    assert read_pooling_config(path) == ("mean", None)
    path.write_text(json.dumps({"embedding_dimension": 8, "pooling_mode": ["max"]}))
    assert read_pooling_config(path) == ("max", 8)


@pytest.mark.parametrize(
    ("pooling", "match"),
    [
        ({"pooling_mode": "weightedmean"}, "pooling mode 'weightedmean' is not supported"),
        ({"pooling_mode_mean_sqrt_len_tokens": True}, "'mean_sqrt_len_tokens' is not supported"),
        ({"pooling_mode": ["cls", "mean"]}, r"concatenates several poolings \['cls', 'mean'\]"),
        (
            {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True},
            "concatenates several poolings",
        ),
    ],
)
def test_unsupported_poolings_name_the_pooling_config(
    folder: Path, pooling: dict[str, Any], match: str
) -> None:
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    with pytest.raises(UnsupportedModelError, match=match) as info:
        read_spec(folder)
    assert info.value.path.endswith("1_Pooling/config.json")


def test_normalize_in_modules_json_turns_normalisation_on(folder: Path) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    modules.append(
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        }
    )
    (folder / "modules.json").write_text(json.dumps(modules))
    assert read_spec(folder).pooling == Pooling("cls", normalize=True)


@pytest.mark.parametrize(
    "extra",
    [
        {"path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"path": "2_Custom", "type": "my_package.Projection"},
    ],
)
def test_other_modules_are_refused_naming_modules_json(folder: Path, extra: dict[str, str]) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps([*modules, {"idx": 2, "name": "2", **extra}]))
    with pytest.raises(UnsupportedModelError, match=r"modules\.json: lists .*no Dense"):
        read_spec(folder)


def test_the_transformer_may_live_in_a_subfolder(folder: Path) -> None:
    inner = folder / "0_Transformer"
    inner.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (folder / name).rename(inner / name)
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (folder / "modules.json").write_text(json.dumps(modules))
    spec = read_spec(folder)
    assert spec.transformer_dir == inner.resolve()
    assert spec.weights_path.is_file()
    assert spec.config.hidden_size == 128


def test_a_module_path_may_not_leave_the_folder(folder: Path) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    modules[1]["path"] = "../elsewhere"
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelFolderError, match=r"'\.\./elsewhere' leaves the model folder"):
        read_spec(folder)


def test_without_sentence_transformers_files_pooling_is_sentence_transformers_default(
    folder: Path,
) -> None:
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        (folder / name).unlink()
    shutil.rmtree(folder / "1_Pooling")
    spec = read_spec(folder)
    assert spec.pooling == SENTENCE_TRANSFORMERS_DEFAULT == Pooling("mean", normalize=False)
    assert spec.max_seq_length == 128  # tokenizer_config.json still says so
    (folder / "tokenizer_config.json").unlink()
    assert read_spec(folder).max_seq_length == 512  # max_position_embeddings, capped at 512
    custom = read_spec(folder, default_pooling=POOLING, default_max_seq_length=256)
    assert (custom.pooling, custom.max_seq_length) == (POOLING, 256)  # what MiniLM uses


def test_sentence_bert_config_sets_length_and_lower_casing(folder: Path) -> None:
    edit(folder / "sentence_bert_config.json", max_seq_length=64, do_lower_case=True)
    spec = read_spec(folder)
    assert (spec.max_seq_length, spec.lowercase) == (64, True)
    edit(folder / "sentence_bert_config.json", max_seq_length=1024)
    with pytest.raises(
        ModelFolderError, match=r"sentence_bert_config\.json: max_seq_length 1024 exceeds"
    ):
        read_spec(folder)


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"hidden_act": "relu"}, UnsupportedModelError, "hidden_act 'relu' is not supported"),
        (
            {"position_embedding_type": "relative_key"},
            UnsupportedModelError,
            "relative position embeddings are not implemented",
        ),
        ({"model_type": "roberta"}, UnsupportedModelError, "model_type 'roberta'"),
        ({"is_decoder": True}, UnsupportedModelError, "encoders only"),
        ({"hidden_size": None}, ModelFolderError, "has no hidden_size"),
        ({"num_attention_heads": 5}, ModelFolderError, "not a multiple of num_attention_heads 5"),
        ({"num_hidden_layers": "2"}, ModelFolderError, "num_hidden_layers '2' is not an integer"),
    ],
)
def test_unsupported_configs_name_config_json(
    folder: Path, changes: dict[str, Any], error: type[Exception], match: str
) -> None:
    edit(folder / "config.json", **changes)
    with pytest.raises(error, match=match) as info:
        read_spec(folder)
    assert str(info.value).startswith(f"{folder / 'config.json'}: ")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_a_missing_file_is_named(folder: Path, name: str) -> None:
    (folder / name).unlink()
    with pytest.raises(MissingModelFileError, match=f"{name}: missing") as info:
        read_spec(folder)
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.path == str(folder / name)


def test_pytorch_only_weights_get_a_hint(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(MissingModelFileError, match=r"convert pytorch_model\.bin"):
        read_spec(folder)


def test_a_missing_folder_and_broken_json_are_named(folder: Path) -> None:
    with pytest.raises(MissingModelFileError, match="no such model folder"):
        read_spec(folder / "absent")
    (folder / "modules.json").write_text("[{")
    with pytest.raises(ModelFolderError, match=r"modules\.json: is not valid JSON"):
        read_spec(folder)


def test_a_default_prompt_is_refused(folder: Path) -> None:
    edit(
        folder / "config_sentence_transformers.json",
        default_prompt_name="query",
        prompts={"query": "q: "},
    )
    with pytest.raises(
        UnsupportedModelError,
        match=r"config_sentence_transformers\.json: default_prompt_name 'query'",
    ):
        read_spec(folder)


def test_a_pooling_width_other_than_hidden_size_is_refused(folder: Path) -> None:
    edit(folder / "1_Pooling" / "config.json", embedding_dimension=64)
    with pytest.raises(
        ModelFolderError, match=r"pools 64-wide vectors but config\.json's hidden_size is 128"
    ):
        read_spec(folder)


def test_minilm_config_keeps_its_defaults_for_partial_files(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 8, "num_attention_heads": 2}))
    assert MiniLMConfig.from_json(path).vocab_size == 30522
    with pytest.raises(ModelFolderError, match="has no vocab_size, num_hidden_layers"):
        BertConfig.from_json(path)  # the generic config reads the shape, never assumes it
