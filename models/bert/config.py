"""What a BERT-family model folder says about the model, read and checked (pure Python, no JAX).

`read_spec(folder)` reads, in the Hugging Face / sentence-transformers layout:

- ``config.json``: the encoder's shape (`BertConfig`); absolute position embeddings and erf
  GELU only;
- ``modules.json`` and ``1_Pooling/config.json``: pooling and normalisation
  (`models.bert.pooling`);
- ``sentence_bert_config.json`` (optional): ``max_seq_length`` (else tokenizer_config.json's
  ``model_max_length``, where sentence-transformers 6 keeps it, capped at
  ``max_position_embeddings``; else ``max_position_embeddings`` capped at 512) and
  ``do_lower_case``;
- ``config_sentence_transformers.json`` (optional): refused when it sets a default prompt
  (kinfer embeds texts as they are given);
- and checks that ``model.safetensors`` and ``tokenizer.json`` exist.

Every refusal is a `models.errors.ModelFolderError` (or a subclass) whose message starts with
the file it is about.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from models.bert.pooling import (
    SENTENCE_TRANSFORMERS_DEFAULT,
    Pooling,
    read_json,
    read_modules,
)
from models.errors import MissingModelFileError, ModelFolderError, UnsupportedModelError

__all__ = ["MAX_SEQ_LENGTH_CAP", "BertConfig", "EncoderSpec", "read_spec"]

#: Without sentence_bert_config.json, the longest input is max_position_embeddings up to this.
MAX_SEQ_LENGTH_CAP = 512

_Config = TypeVar("_Config", bound="BertConfig")


@dataclass(frozen=True)
class BertConfig:
    """Shape of a BERT encoder; field names follow Hugging Face's config.json.

    The shape fields have no defaults: `from_json` reads them from the file. The three with
    defaults take Hugging Face's `BertConfig` defaults when the file omits them.
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "layer_norm_eps":
                if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    raise ValueError(f"layer_norm_eps {value!r} is not a positive number")
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{field.name} {value!r} is not an integer")
            elif value < (0 if field.name == "pad_token_id" else 1):
                raise ValueError(f"{field.name} {value!r} is out of range")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(
                f"pad_token_id {self.pad_token_id} is not below vocab_size {self.vocab_size}"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_json(cls: type[_Config], path: str | Path) -> _Config:
        """Read the fields this model uses from a Hugging Face config.json.

        Raises:
            MissingModelFileError: no such file.
            UnsupportedModelError: not a BERT (``model_type``), a decoder, another activation
                than ``gelu`` or other position embeddings than ``absolute``.
            ModelFolderError: a shape field missing or out of range.
        """
        path = Path(path)
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise ModelFolderError(path, "expected a JSON object")
        _check_supported(raw, path)
        values: dict[str, Any] = {}
        for field in fields(cls):
            if field.name in raw:
                values[field.name] = raw[field.name]
        if values.get("pad_token_id", 0) is None:  # allowed by Hugging Face; padding is masked
            values["pad_token_id"] = 0
        missing = [
            field.name
            for field in fields(cls)
            if field.name not in values and field.default is MISSING
        ]
        if missing:
            raise ModelFolderError(path, f"has no {', '.join(missing)}")
        try:
            return cls(**values)
        except ValueError as error:
            raise ModelFolderError(path, str(error)) from None


def _check_supported(raw: dict[str, Any], path: Path) -> None:
    model_type = raw.get("model_type", "bert")
    if model_type != "bert":
        raise UnsupportedModelError(
            path, f"model_type {model_type!r} is not supported (kinfer serves 'bert' encoders)"
        )
    activation = raw.get("hidden_act", "gelu")
    if activation != "gelu":
        raise UnsupportedModelError(
            path, f"hidden_act {activation!r} is not supported (only 'gelu', BERT's erf GELU)"
        )
    positions = raw.get("position_embedding_type", "absolute")
    if positions != "absolute":
        raise UnsupportedModelError(
            path,
            f"position_embedding_type {positions!r} is not supported (only 'absolute'; "
            "relative position embeddings are not implemented)",
        )
    if raw.get("is_decoder"):
        raise UnsupportedModelError(path, "is_decoder is true: kinfer serves encoders only")


@dataclass(frozen=True)
class EncoderSpec:
    """Everything a model folder says about serving it, checked.

    Attributes:
        folder: the folder given.
        transformer_dir: where config.json, model.safetensors and tokenizer.json are (the
            folder itself unless modules.json puts the Transformer in a subfolder).
        config: the encoder's shape.
        pooling: pooling and normalisation.
        max_seq_length: longest input in tokens, special tokens included.
        lowercase: lower-case texts before tokenising (sentence_bert_config's do_lower_case).
        pooling_source: the file the pooling came from, or None for a default.
    """

    folder: Path
    transformer_dir: Path
    config: BertConfig
    pooling: Pooling
    max_seq_length: int
    lowercase: bool = False
    pooling_source: Path | None = None

    @property
    def weights_path(self) -> Path:
        """The encoder's weights."""
        return self.transformer_dir / "model.safetensors"

    @property
    def tokenizer_path(self) -> Path:
        """The tokenizer, in the `tokenizers` library's format."""
        return self.transformer_dir / "tokenizer.json"


def read_spec(
    folder: str | Path,
    *,
    default_pooling: Pooling = SENTENCE_TRANSFORMERS_DEFAULT,
    default_max_seq_length: int | None = None,
) -> EncoderSpec:
    """Read and check a BERT-family folder; see the module docstring for the files read.

    Args:
        default_pooling: the pooling of a folder without modules.json (sentence-transformers'
            own default: mean, not normalised).
        default_max_seq_length: the longest input of a folder that declares none, in
            sentence_bert_config.json or tokenizer_config.json (None:
            max_position_embeddings capped at 512).

    Raises:
        MissingModelFileError: the folder, or a file the model needs, is absent.
        UnsupportedModelError: the folder describes something kinfer does not serve.
        ModelFolderError: a file that cannot be read as what it should be.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingModelFileError(folder, "no such model folder")
    modules = read_modules(folder)
    root = modules.transformer_dir
    config = BertConfig.from_json(root / "config.json")
    if modules.dimension is not None and modules.dimension != config.hidden_size:
        raise ModelFolderError(
            modules.pooling_config or folder,
            f"pools {modules.dimension}-wide vectors but config.json's hidden_size is "
            f"{config.hidden_size}",
        )
    max_seq_length, lowercase = _sentence_bert_config(root, config, default_max_seq_length)
    _refuse_default_prompt(folder / "config_sentence_transformers.json")
    weights = root / "model.safetensors"
    if not weights.is_file():
        legacy = (root / "pytorch_model.bin").is_file()
        raise MissingModelFileError(weights, "convert pytorch_model.bin to it" if legacy else "")
    if not (root / "tokenizer.json").is_file():
        raise MissingModelFileError(root / "tokenizer.json", "the tokenizers library's format")
    return EncoderSpec(
        folder=folder,
        transformer_dir=root,
        config=config,
        pooling=modules.pooling or default_pooling,
        max_seq_length=max_seq_length,
        lowercase=lowercase,
        pooling_source=modules.pooling_config,
    )


def _sentence_bert_config(
    root: Path, config: BertConfig, default_length: int | None
) -> tuple[int, bool]:
    """(max_seq_length, do_lower_case), as sentence-transformers settles them.

    The length is sentence_bert_config.json's ``max_seq_length``; failing that (sentence-
    transformers 6 no longer writes it there) tokenizer_config.json's ``model_max_length``
    capped at ``max_position_embeddings``; failing that ``default_length``, or
    ``max_position_embeddings`` capped at 512.
    """
    positions = config.max_position_embeddings
    path = root / "sentence_bert_config.json"
    raw = read_json(path) if path.is_file() else {}
    if not isinstance(raw, dict):
        raise ModelFolderError(path, "expected a JSON object")
    length = raw.get("max_seq_length")
    if length is not None:
        length = _length(length, path, "max_seq_length")
        if length > positions:
            raise ModelFolderError(
                path,
                f"max_seq_length {length} exceeds config.json's max_position_embeddings "
                f"{positions}",
            )
    else:
        length = min(positions, default_length or MAX_SEQ_LENGTH_CAP)
        tokenizer_config = root / "tokenizer_config.json"
        if tokenizer_config.is_file():
            settings = read_json(tokenizer_config)
            if isinstance(settings, dict) and settings.get("model_max_length") is not None:
                declared = _length(
                    settings["model_max_length"], tokenizer_config, "model_max_length"
                )
                length = min(declared, positions)
    lowercase = raw.get("do_lower_case", False)
    if not isinstance(lowercase, bool):
        raise ModelFolderError(path, f"do_lower_case {lowercase!r} is not a boolean")
    return length, lowercase


def _length(value: object, path: Path, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 2:
        raise ModelFolderError(path, f"{key} {value!r} is not a number >= 2")
    return int(min(value, 2**31 - 1))  # transformers writes 1e30 for "no limit"


def _refuse_default_prompt(path: Path) -> None:
    if not path.is_file():
        return
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ModelFolderError(path, "expected a JSON object")
    kind = raw.get("model_type", "SentenceTransformer")
    if kind != "SentenceTransformer":
        raise UnsupportedModelError(
            path, f"model_type {kind!r}: kinfer serves SentenceTransformer models"
        )
    if raw.get("default_prompt_name"):
        raise UnsupportedModelError(
            path,
            f"default_prompt_name {raw['default_prompt_name']!r}: sentence-transformers would "
            "prepend a prompt to every text, and kinfer embeds texts as given",
        )
