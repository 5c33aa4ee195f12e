"""The model platform against the real broker: two models in one worker, version pinning,
`kinfer models`, `kinfer eval digits`, and a hot swap under load with nothing lost.

One worker serves a repository of the test's own: minilm 0.1.0 (the shipped manifest, its files
read from the weights package) and digits 1 (the shipped weights). The hot swap adds digits 2,
whose weights are digits 1's with a bias that makes every answer label 0, so an answer's
version can be checked against what computed it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from safetensors.numpy import load_file, save_file

from models.digits.data import load_split
from models.repository import SHIPPED_REPOSITORY, sha256_of
from streams.broker import EmbeddedBroker, ExternalBroker
from streams.client import InferenceClient
from tests.support.topics import create_worker_topics
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

DIGITS_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "digits" / "weights"


def write_digits_version(
    repository: Path, version: str, weights: Path, *, sha256: str | None = None
) -> Path:
    """A digits version folder whose manifest points at ``weights``/model.safetensors."""
    folder = repository / "digits" / version
    folder.mkdir(parents=True)
    digest = sha256 or sha256_of(weights / "model.safetensors")
    (folder / "manifest.toml").write_text(
        f'name = "digits"\nversion = "{version}"\ntask = "image-classification"\n'
        f'kind = "digits-cnn"\naliases = ["default"]\n\n[source]\npath = "{weights}"\n\n'
        '[inputs]\ntype = "image"\nshape = [8, 8]\nminimum = 0\nmaximum = 16\n\n'
        '[outputs]\ntype = "classification"\nclasses = 10\n\n'
        f'[files]\n"model.safetensors" = "{digest}"\n'
    )
    return folder


def label_zero_weights(folder: Path) -> Path:
    """digits 1's weights with a large bias on label 0: every image is answered 0."""
    folder.mkdir(parents=True)
    tensors = load_file(str(DIGITS_WEIGHTS / "model.safetensors"))
    tensors["linear2.bias"] = tensors["linear2.bias"].copy()
    tensors["linear2.bias"][0] += 1000.0
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    (root / "minilm" / "0.1.0").mkdir(parents=True)
    shutil.copy(
        SHIPPED_REPOSITORY / "minilm" / "0.1.0" / "manifest.toml", root / "minilm" / "0.1.0"
    )
    write_digits_version(root, "1", DIGITS_WEIGHTS)
    return root


@pytest.fixture(scope="module")
def topics(broker: EmbeddedBroker | ExternalBroker) -> dict[str, str]:
    return asyncio.run(create_worker_topics(broker.bootstrap, "mp", partitions=3))


@pytest.fixture(scope="module")
def worker(
    broker: EmbeddedBroker | ExternalBroker, topics: dict[str, str], repository: Path
) -> Iterator[WorkerProcess]:
    settings = {
        **topics,
        "KINFER_MODEL_REPOSITORY": str(repository),
        "KINFER_MODELS": "",
        "KINFER_MODEL_WATCH_INTERVAL_S": "0.5",
        # MiniLM's own 256-token limit, as the parity fixture was computed (`kinfer eval`)
        "KINFER_SEQ_BUCKETS": "32,256",
    }
    with WorkerProcess(broker.bootstrap, settings) as process:
        yield process


@pytest.fixture(scope="module")
def offline_labels() -> np.ndarray:
    from models.digits.classifier import DigitsClassifier

    return DigitsClassifier(DIGITS_WEIGHTS).predict_proba(load_split().test_images).argmax(axis=1)


def statuses(worker: WorkerProcess) -> dict[tuple[str, str], dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/models", timeout=5) as r:
        listed = orjson.loads(r.read())["models"]
    return {(s["name"], s["version"]): s for s in listed}


def client_for(broker: EmbeddedBroker | ExternalBroker, topics: dict[str, str]) -> InferenceClient:
    return InferenceClient(broker.bootstrap, topics["request_topic"], topics["response_topic"])


async def test_two_models_interleaved_on_one_topic_are_each_answered(
    broker: EmbeddedBroker | ExternalBroker,
    topics: dict[str, str],
    worker: WorkerProcess,
    offline_labels: np.ndarray,
) -> None:
    images = load_split().test_images
    async with client_for(broker, topics) as client:
        sent: list[tuple[str, str, int]] = []
        for i in range(24):
            key = f"user-{i}".encode()
            if i % 2:
                rid = await client.send([images[i].tolist()], model="digits", key=key)
                sent.append((rid, "digits", i))
            else:
                rid = await client.send([f"sentence {i}", "two"], model="minilm", key=key)
                sent.append((rid, "minilm", i))
        answers = await client.collect([rid for rid, _, _ in sent], 60)
    for rid, model, i in sent:
        answer = answers[rid]
        assert "error" not in answer, answer
        assert answer["model"] == model
        if model == "digits":
            assert answer["version"] == "1"
            [output] = answer["outputs"]
            assert output["label"] == offline_labels[i]
            assert len(output["probabilities"]) == 10
        else:
            assert answer["version"] == "0.1.0"
            rows = np.asarray(answer["outputs"], np.float32)
            assert rows.shape == (2, 384)
            np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-4)


async def test_version_pins_top_k_and_refusals_per_kind(
    broker: EmbeddedBroker | ExternalBroker, topics: dict[str, str], worker: WorkerProcess
) -> None:
    image = load_split().test_images[0].tolist()
    async with client_for(broker, topics) as client:
        pinned = await client.infer([image], model="digits", version="1", params={"top_k": 3})
        unknown = await client.infer([image], model="digits", version="9")
        as_base64 = await client.infer([image], model="digits", encoding="base64")
        text_to_digits = await client.infer(["seven"], model="digits")
        image_to_minilm = await client.infer(["ok", image], model="minilm")
    [output] = pinned["outputs"]
    assert pinned["version"] == "1"
    assert output["top_k"][0][0] == output["label"]
    assert [p for _, p in output["top_k"]] == sorted((p for _, p in output["top_k"]), reverse=True)
    assert unknown["error"]["code"] == "UNKNOWN_MODEL"
    assert "digits (1)" in unknown["error"]["message"]
    assert "minilm (0.1.0)" in unknown["error"]["message"]
    assert as_base64["error"]["code"] == "INVALID_REQUEST"
    assert text_to_digits["error"]["code"] == "INVALID_REQUEST"
    assert "inputs[0]" in text_to_digits["error"]["message"]
    assert image_to_minilm["error"]["code"] == "INVALID_REQUEST"
    assert "inputs[1]" in image_to_minilm["error"]["message"]


def test_models_lists_live_states(worker: WorkerProcess) -> None:
    listed = statuses(worker)
    assert listed[("digits", "1")]["state"] == "ready"
    assert listed[("minilm", "0.1.0")]["shapes"], "compiled shapes are listed"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "models",
            "--worker",
            f"http://127.0.0.1:{worker.web_port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert re.search(r"digits 1 \(default\): ready, digits-cnn, cpu, float32, shapes 1, 8, 32", out)
    assert "minilm 0.1.0 (default): ready, bert-encoder" in out


def test_kinfer_eval_digits_prints_the_offline_f1(
    broker: EmbeddedBroker | ExternalBroker,
    topics: dict[str, str],
    worker: WorkerProcess,
    repository: Path,
    offline_labels: np.ndarray,
) -> None:
    from sklearn.metrics import accuracy_score, f1_score  # type: ignore[import-untyped]

    env = {
        **os.environ,
        "KINFER_REQUEST_TOPIC": topics["request_topic"],
        "KINFER_RESPONSE_TOPIC": topics["response_topic"],
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "eval",
            "digits",
            "--broker",
            f"kafka://{broker.bootstrap}",
            "--repository",
            str(repository),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    labels = load_split().test_labels
    printed_f1 = re.search(r"^macro-F1 ([0-9.]+)$", done.stdout, re.M)
    printed_accuracy = re.search(r"^accuracy ([0-9.]+)$", done.stdout, re.M)
    assert printed_f1 is not None, done.stdout
    assert printed_accuracy is not None, done.stdout
    assert printed_f1.group(1) == f"{f1_score(labels, offline_labels, average='macro'):.6f}"
    assert printed_accuracy.group(1) == f"{accuracy_score(labels, offline_labels):.6f}"
    assert "offline check: all 450 predictions equal" in done.stdout
    assert "confusion matrix" in done.stdout


def test_kinfer_eval_checks_an_encoder_against_its_parity_fixture(
    broker: EmbeddedBroker | ExternalBroker, topics: dict[str, str], worker: WorkerProcess
) -> None:
    env = {
        **os.environ,
        "KINFER_REQUEST_TOPIC": topics["request_topic"],
        "KINFER_RESPONSE_TOPIC": topics["response_topic"],
    }
    command = [sys.executable, "-m", "streams.cli", "eval", "minilm"]
    command += ["--broker", f"kafka://{broker.bootstrap}", "--min-cosine", "0.9999"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"cosine to the fixture: min ([0-9.]+)", done.stdout)
    assert found is not None, done.stdout
    assert float(found.group(1)) >= 0.9999
    assert "minilm version 0.1.0: 60 parity texts" in done.stdout


async def test_hot_swap_under_load_loses_nothing_and_stamps_each_answer(
    broker: EmbeddedBroker | ExternalBroker,
    topics: dict[str, str],
    worker: WorkerProcess,
    repository: Path,
    offline_labels: np.ndarray,
    tmp_path: Path,
) -> None:
    images = load_split().test_images
    sent: list[tuple[str, int]] = []
    stop = asyncio.Event()

    async def load(client: InferenceClient) -> None:
        i = 0
        while not stop.is_set():
            index = i % len(images)
            rid = await client.send([images[index].tolist()], model="digits", key=b"k%d" % i)
            sent.append((rid, index))
            i += 1
            await asyncio.sleep(0.01)

    async def until(predicate: Any, what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate(await asyncio.to_thread(statuses, worker)):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.2)

    async with client_for(broker, topics) as client:
        loader = asyncio.create_task(load(client))
        await asyncio.sleep(1.0)
        # a broken version (its sha256 does not match) is refused; 1 keeps serving
        write_digits_version(repository, "0", DIGITS_WEIGHTS, sha256="0" * 64)
        await until(lambda s: s.get(("digits", "0"), {}).get("state") == "failed", "0 failed")
        assert "sha256" in statuses(worker)[("digits", "0")]["reason"]
        assert "model.safetensors" in statuses(worker)[("digits", "0")]["reason"]
        # version 2 appears: loaded and warmed beside 1, then the default
        write_digits_version(repository, "2", label_zero_weights(tmp_path / "weights-2"))
        await until(lambda s: s.get(("digits", "2"), {}).get("default"), "2 to become default")
        await asyncio.sleep(1.0)
        # version 1's folder is removed: it drains, then unloads
        shutil.rmtree(repository / "digits" / "1")
        await until(lambda s: ("digits", "1") not in s, "1 to unload")
        await asyncio.sleep(1.0)
        stop.set()
        await loader
        answers = await client.collect([rid for rid, _ in sent], 60)
        gone = await client.infer([images[0].tolist()], model="digits", version="1")
    shutil.rmtree(repository / "digits" / "0")

    versions = [answers[rid].get("version") for rid, _ in sent]
    assert len(answers) == len(sent) > 100
    assert all("error" not in answers[rid] for rid, _ in sent), "no request failed"
    assert {"1", "2"} <= set(versions), "both versions answered during the swap"
    for (rid, index), version in zip(sent, versions, strict=True):
        [output] = answers[rid]["outputs"]
        expected = offline_labels[index] if version == "1" else 0
        assert output["label"] == expected, (version, index)
    assert gone["error"]["code"] == "UNKNOWN_MODEL"
