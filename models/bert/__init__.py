"""Any BERT-family sentence encoder from a folder in the Hugging Face layout.

`load_encoder(folder, name=..., version=...)` returns a `models.servable.Servable`; the
folder's config.json, tokenizer.json, model.safetensors and sentence-transformers files
(modules.json, 1_Pooling/config.json, sentence_bert_config.json) say everything about it.

- `config`: read and check the folder (pure Python); `pooling`: modules.json and the pooling
  config; `tokenizer`: tokenizer.json with an ASCII fast path; `model`: the packed NNX
  encoder and its poolings; `weights`: safetensors into the model; `servable`: all together.
- `make_tiny_checkpoint`: writes the small random test checkpoint (run with PyTorch).

Importing this package is cheap; `load_encoder` loads JAX and Flax on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.bert.servable import BertEncoderServable, load_encoder

__all__ = ["BertEncoderServable", "load_encoder"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from models.bert import servable

        return getattr(servable, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
