"""Load Hugging Face BERT safetensors into MiniLM: `models.bert.weights`, re-exported."""

from __future__ import annotations

from models.bert.weights import load_weights, tensor_map

__all__ = ["load_weights", "tensor_map"]
