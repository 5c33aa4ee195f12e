"""``kinfer eval``: how good a served model is, measured through Kafka and checked offline.

- A classifier (``digits``): the held-out test split (`models.digits.data.load_split`, the
  split its training used) goes through the request topic to the running workers. The report
  gives accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix. The same
  version is then loaded here and run offline on the same images: any prediction that differs
  is a failure.
- A sentence encoder: the texts of its parity fixture (``tests/fixtures/<name>_parity.json``,
  embeddings computed by sentence-transformers) go through Kafka; the report gives the cosine
  of each served embedding to the fixture's, min and mean, and fails under ``min_cosine``.

The caller sends requests with `streams.client.InferenceClient`; nothing here imports JAX
until the offline check loads the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streams.client import InferenceClient
from streams.errors import KinferError
from streams.wire_encoding import decode_rows

__all__ = [
    "ClassifierReport",
    "EncoderReport",
    "EvalError",
    "evaluate_classifier",
    "evaluate_encoder",
    "parity_fixture",
]

#: Where the parity fixtures of the shipped encoders live (next to the tests that use them).
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


class EvalError(KinferError):
    """The evaluation could not run (an error answer, no fixture, a mixed-version answer)."""


@dataclass
class ClassifierReport:
    """A classifier's scores on the test split, served and offline."""

    model: str
    version: str
    labels: np.ndarray
    served: np.ndarray
    offline: np.ndarray
    accuracy: float = 0.0
    macro_f1: float = 0.0
    per_class: list[dict[str, float]] = field(default_factory=list)
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))

    def __post_init__(self) -> None:
        from sklearn.metrics import (  # type: ignore[import-untyped]
            accuracy_score,
            confusion_matrix,
            f1_score,
            precision_recall_fscore_support,
        )

        classes = sorted(set(self.labels.tolist()))
        self.accuracy = float(accuracy_score(self.labels, self.served))
        self.macro_f1 = float(f1_score(self.labels, self.served, average="macro"))
        precision, recall, f1, support = precision_recall_fscore_support(
            self.labels, self.served, labels=classes, zero_division=0
        )
        self.per_class = [
            {"label": c, "precision": p, "recall": r, "f1": f, "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        ]
        self.confusion = confusion_matrix(self.labels, self.served, labels=classes)

    @property
    def mismatches(self) -> list[int]:
        """Indices where the served prediction differs from the offline one."""
        return np.flatnonzero(self.served != self.offline).tolist()

    def render(self) -> str:
        """The report as text."""
        lines = [
            f"{self.model} version {self.version}: {len(self.labels)} held-out images "
            "sent through Kafka",
            f"accuracy {self.accuracy:.6f}",
            f"macro-F1 {self.macro_f1:.6f}",
            "",
            "label  precision  recall     f1  support",
        ]
        lines += [
            f"{row['label']:>5}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
            f"{row['f1']:5.4f}  {row['support']:7d}"
            for row in self.per_class
        ]
        lines += ["", "confusion matrix (rows: true label, columns: predicted)"]
        header = "      " + " ".join(f"{c:>4}" for c in range(len(self.confusion)))
        lines.append(header)
        lines += [
            f"{i:>4}  " + " ".join(f"{v:>4}" for v in row)
            for i, row in enumerate(self.confusion.tolist())
        ]
        mismatches = self.mismatches
        lines.append("")
        if mismatches:
            lines.append(
                f"OFFLINE CHECK FAILED: {len(mismatches)} predictions differ from the same "
                f"version run here (first indices {mismatches[:10]})"
            )
        else:
            lines.append(f"offline check: all {len(self.labels)} predictions equal")
        return "\n".join(lines)


@dataclass
class EncoderReport:
    """Served embeddings against an encoder's parity fixture."""

    model: str
    version: str
    cosines: np.ndarray
    min_cosine: float

    @property
    def passed(self) -> bool:
        """Every cosine at least ``min_cosine``."""
        return bool(self.cosines.min() >= self.min_cosine)

    def render(self) -> str:
        """The report as text."""
        worst = int(self.cosines.argmin())
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"{self.model} version {self.version}: {len(self.cosines)} parity texts sent "
            f"through Kafka\ncosine to the fixture: min {self.cosines.min():.7f} (case {worst}), "
            f"mean {self.cosines.mean():.7f}\n{verdict}: bound min >= {self.min_cosine}"
        )


async def _answers(
    client: InferenceClient,
    model: str,
    inputs: Sequence[Any],
    *,
    version: str | None,
    per_request: int,
    timeout_s: float,
    **options: Any,
) -> list[dict[str, Any]]:
    """Send ``inputs`` in requests of ``per_request``; the answers in order (raises on error)."""
    chunks = [
        list(inputs[start : start + per_request]) for start in range(0, len(inputs), per_request)
    ]
    ids = [await client.send(chunk, model=model, version=version, **options) for chunk in chunks]
    answers = await client.collect(ids, timeout_s)
    ordered = [answers[request_id] for request_id in ids]
    for answer in ordered:
        if "error" in answer:
            error = answer["error"]
            raise EvalError(f"{model}: {error.get('code')}: {error.get('message')}")
    versions = {answer.get("version") for answer in ordered}
    if len(versions) != 1:
        raise EvalError(
            f"{model}: answers came from several versions {sorted(map(str, versions))}: "
            "pin one with --version"
        )
    return ordered


async def evaluate_classifier(
    client: InferenceClient,
    model: str = "digits",
    *,
    version: str | None = None,
    repository: Path | None = None,
    per_request: int = 64,
    timeout_s: float = 60.0,
) -> ClassifierReport:
    """Score ``model`` through Kafka on its test split, and check it against an offline run."""
    from models.digits.data import load_split

    split = load_split()
    answers = await _answers(
        client,
        model,
        split.test_images.tolist(),
        version=version,
        per_request=per_request,
        timeout_s=timeout_s,
    )
    served_version = str(answers[0]["version"])
    served = np.array(
        [output["label"] for answer in answers for output in answer["outputs"]], np.int64
    )
    offline = await asyncio.to_thread(
        _offline_labels, model, served_version, repository, split.test_images
    )
    return ClassifierReport(model, served_version, split.test_labels, served, offline)


def _offline_labels(
    model: str, version: str, repository: Path | None, images: np.ndarray
) -> np.ndarray:
    from models import deployment
    from models.digits.classifier import DigitsClassifier
    from models.repository import SHIPPED_REPOSITORY, read_manifest

    root = repository or SHIPPED_REPOSITORY
    manifest = root / model / version / "manifest.toml"
    if not manifest.is_file():
        raise EvalError(
            f"the served version {model} {version} is not in {root}: cannot check it offline "
            "(pass --repository)"
        )
    classifier = deployment.build(read_manifest(manifest))
    if not isinstance(classifier, DigitsClassifier):
        raise EvalError(f"{model} {version} is not a classifier")
    return np.asarray(classifier.predict_proba(images).argmax(axis=1), np.int64)


def parity_fixture(model: str, fixture: Path | None = None) -> tuple[list[str], np.ndarray]:
    """The texts and reference embeddings of ``model``'s parity fixture."""
    path = fixture or FIXTURES / f"{model.replace('-', '_')}_parity.json"
    if not path.is_file():
        raise EvalError(f"no parity fixture for {model!r} at {path} (pass --fixture)")
    doc = orjson.loads(path.read_bytes())
    cases = doc["cases"]
    texts = [case["text"] for case in cases]
    return texts, np.asarray([case["embedding"] for case in cases], np.float32)


async def evaluate_encoder(
    client: InferenceClient,
    model: str,
    *,
    version: str | None = None,
    fixture: Path | None = None,
    min_cosine: float = 0.99,
    per_request: int = 16,
    timeout_s: float = 60.0,
) -> EncoderReport:
    """Compare the served embeddings of the fixture's texts with the fixture's."""
    texts, expected = parity_fixture(model, fixture)
    answers = await _answers(
        client,
        model,
        texts,
        version=version,
        per_request=per_request,
        timeout_s=timeout_s,
        encoding="base64",
    )
    rows = np.concatenate([decode_rows(answer) for answer in answers])
    if rows.shape != expected.shape:
        raise EvalError(f"{model}: served rows {rows.shape}, fixture {expected.shape}")
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(expected, axis=1)
    cosines = np.einsum("ij,ij->i", rows, expected) / np.maximum(norms, 1e-12)
    return EncoderReport(model, str(answers[0]["version"]), cosines, min_cosine)
