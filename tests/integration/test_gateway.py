"""The Open Inference Protocol gateway end to end: tritonclient, aiohttp and curl -> gateway ->
Kafka -> worker -> Kafka -> gateway, against the session broker.

One worker and one gateway (with a token file) serve the whole module; a second gateway,
pointed at a port where no broker listens, answers the "not ready" cases.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_grpc_aio
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from streams.broker import EmbeddedBroker, ExternalBroker, free_port
from streams.client import InferenceClient
from streams.wire_encoding import decode_rows
from tests.support.gateway import GatewayServer
from tests.support.topics import create_worker_topics
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

ALL_MODELS = "gateway-test-token-all-models"
TEXT_ONLY = "gateway-test-token-minilm-only"
TEXTS = ["Kafka meets JAX", "东京的天气は晴れ", "a third, longer sentence about a night train"]


@pytest.fixture(scope="module")
def topics(broker: EmbeddedBroker | ExternalBroker) -> dict[str, str]:
    return asyncio.run(create_worker_topics(broker.bootstrap, "gw"))


@pytest.fixture(scope="module")
def worker(
    broker: EmbeddedBroker | ExternalBroker, topics: dict[str, str]
) -> Iterator[WorkerProcess]:
    # every text here is short: one sequence bucket keeps the warm-up short
    served = {**topics, "models": "minilm:0.1.0,digits", "seq_buckets": "32", "pack_length": "32"}
    with WorkerProcess(broker.bootstrap, served) as process:
        yield process


@pytest.fixture(scope="module")
def gateway(
    broker: EmbeddedBroker | ExternalBroker,
    topics: dict[str, str],
    worker: WorkerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayServer]:
    tokens = tmp_path_factory.mktemp("gateway") / "tokens.json"
    tokens.write_bytes(
        orjson.dumps(
            {
                "tokens": [
                    {"name": "all", "token": ALL_MODELS, "models": ["*"]},
                    {"name": "text", "token": TEXT_ONLY, "models": ["minilm"]},
                ]
            }
        )
    )
    settings = {
        "request_topic": topics["request_topic"],
        "gateway_reply_topic": f"kinfer.replies.gw-{uuid.uuid4().hex[:8]}",
        "gateway_tokens_file": str(tokens),
    }
    with GatewayServer(broker.bootstrap, settings) as server:
        yield server


@pytest.fixture(scope="module")
def unready_gateway() -> Iterator[GatewayServer]:
    """A gateway whose broker is not there: live, never ready."""
    with GatewayServer(f"127.0.0.1:{free_port()}", wait_for="live") as server:
        yield server


def bearer(token: str = ALL_MODELS) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}  # gRPC metadata keys are lower-case


def kafka_answer(
    broker: Any, topics: dict[str, str], inputs: list[Any], **options: Any
) -> dict[str, Any]:
    """The same request over the Kafka SDK, for comparison."""

    async def run() -> dict[str, Any]:
        async with InferenceClient(
            broker.bootstrap, topics["request_topic"], topics["response_topic"]
        ) as client:
            return await client.infer(inputs, timeout_s=60, **options)

    answer = asyncio.run(run())
    assert "error" not in answer, answer
    return answer


def text_input(module: Any, texts: list[str], binary: bool = True) -> Any:
    tensor = module.InferInput("text", [len(texts)], "BYTES")
    data = np.array([t.encode() for t in texts], dtype=object)
    if module is triton_http:
        tensor.set_data_from_numpy(data, binary_data=binary)
    else:
        tensor.set_data_from_numpy(data)
    return tensor


def digits_images(count: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().images[:count], dtype=np.float32)


# -- infer -----------------------------------------------------------------------------------


def test_v2_infer_over_http_and_grpc_equals_the_kafka_path(
    broker: Any, topics: dict[str, str], gateway: GatewayServer
) -> None:
    expected = decode_rows(kafka_answer(broker, topics, TEXTS, model="minilm"))
    http = triton_http.InferenceServerClient(gateway.http)
    binary = http.infer(
        "minilm", [text_input(triton_http, TEXTS)], headers=bearer(), request_id="h1"
    )
    np.testing.assert_array_equal(binary.as_numpy("embedding"), expected)
    assert binary.get_response()["model_version"] == "0.1.0"
    assert binary.get_response()["id"] == "h1"
    as_json = http.infer(
        "minilm",
        [text_input(triton_http, TEXTS, binary=False)],
        outputs=[triton_http.InferRequestedOutput("embedding", binary_data=False)],
        headers=bearer(),
    )
    assert "data" in as_json.get_response()["outputs"][0]
    np.testing.assert_array_equal(as_json.as_numpy("embedding"), expected)
    grpc = triton_grpc.InferenceServerClient(gateway.grpc)
    answer = grpc.infer(
        "minilm", [text_input(triton_grpc, TEXTS)], headers=bearer(), request_id="g1"
    )
    np.testing.assert_array_equal(answer.as_numpy("embedding"), expected)
    assert (answer.get_response().model_version, answer.get_response().id) == ("0.1.0", "g1")


def test_digits_over_http_and_grpc_equal_the_kafka_path(
    broker: Any, topics: dict[str, str], gateway: GatewayServer
) -> None:
    images = digits_images(3)
    answer = kafka_answer(broker, topics, images.tolist(), model="digits")
    labels = [row["label"] for row in answer["outputs"]]
    probabilities = np.asarray([row["probabilities"] for row in answer["outputs"]], np.float32)
    http = triton_http.InferenceServerClient(gateway.http)
    image = triton_http.InferInput("image", list(images.shape), "FP32")
    image.set_data_from_numpy(images)
    result = http.infer("digits", [image], headers=bearer())
    assert result.as_numpy("label").tolist() == labels
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
    grpc = triton_grpc.InferenceServerClient(gateway.grpc)
    flat = triton_grpc.InferInput("image", [3, 64], "FP32")
    flat.set_data_from_numpy(images.reshape(3, 64))
    top = triton_grpc.InferRequestedOutput("probabilities", class_count=2)
    result = grpc.infer("digits", [flat], outputs=[top], headers=bearer(), model_version="1")
    best = result.as_numpy("probabilities")
    assert best.shape == (3, 2)
    assert [int(item.split(b":")[1]) for item in best[:, 0]] == labels


def test_200_concurrent_requests_over_http_and_grpc_are_all_answered_each_its_own(
    broker: Any, topics: dict[str, str], gateway: GatewayServer
) -> None:
    texts = [f"concurrent request {i} about order {i * 7 % 13}" for i in range(200)]
    expected = decode_rows(kafka_answer(broker, topics, texts, model="minilm", encoding="base64"))

    async def over_http(session: aiohttp.ClientSession, i: int) -> np.ndarray:
        body = {
            "id": f"h{i}",
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [texts[i]]}],
        }
        url = f"http://{gateway.http}/v2/models/minilm/infer"
        async with session.post(url, json=body, headers=bearer()) as response:
            assert response.status == 200, await response.text()
            doc = await response.json()
        assert doc["id"] == f"h{i}"
        return np.asarray(doc["outputs"][0]["data"], np.float32)

    async def over_grpc(client: Any, i: int) -> np.ndarray:
        answer = await client.infer(
            "minilm",
            [text_input(triton_grpc_aio, [texts[i]])],
            headers=bearer(),
            request_id=f"g{i}",
        )
        assert answer.get_response().id == f"g{i}"
        return np.asarray(answer.as_numpy("embedding")[0])

    async def run() -> list[np.ndarray]:
        client = triton_grpc_aio.InferenceServerClient(gateway.grpc)
        try:
            async with aiohttp.ClientSession() as session:
                calls = [
                    over_http(session, i) if i % 2 else over_grpc(client, i) for i in range(200)
                ]
                return list(await asyncio.wait_for(asyncio.gather(*calls), timeout=120))
        finally:
            await client.close()

    rows = asyncio.run(run())
    assert len(rows) == 200
    # each answer is its own text's embedding (batches of other shapes differ by ~1e-7)
    np.testing.assert_allclose(np.stack(rows), expected, atol=2e-5)


# -- health and metadata ---------------------------------------------------------------------


def test_health_and_metadata_over_http_grpc_and_curl(gateway: GatewayServer) -> None:
    http = triton_http.InferenceServerClient(gateway.http)
    assert http.is_server_live()
    assert http.is_server_ready()
    assert http.is_model_ready("minilm", headers=bearer())
    assert http.get_server_metadata(headers=bearer())["name"] == "kinfer"
    meta = http.get_model_metadata("digits", headers=bearer())
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 8, 8]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("label", "INT64"),
        ("probabilities", "FP32"),
    ]
    grpc = triton_grpc.InferenceServerClient(gateway.grpc)
    assert grpc.is_server_live()
    assert grpc.is_server_ready()
    assert grpc.is_model_ready("minilm", "0.1.0", headers=bearer())
    minilm = grpc.get_model_metadata("minilm", headers=bearer())
    assert minilm.versions[0] == "0.1.0"
    assert [(t.name, t.datatype, list(t.shape)) for t in minilm.outputs] == [
        ("embedding", "FP32", [-1, 384])
    ]
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    base = f"http://{gateway.http}"
    body = orjson.dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["curl"]}]}
    )
    curl = ["curl", "-s", "--max-time", "30", "-H", f"Authorization: Bearer {ALL_MODELS}"]
    out = subprocess.run(
        [*curl, f"{base}/v2/models/minilm/infer", "--data-binary", "@-"],
        input=body,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert orjson.loads(out)["outputs"][0]["shape"] == [1, 384]
    status = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/v2"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert status == "401"


# -- errors ----------------------------------------------------------------------------------


def http_status(call: Any) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status()), caught.value.message()


def test_each_error_status_over_http_and_grpc(
    gateway: GatewayServer, unready_gateway: GatewayServer
) -> None:
    http = triton_http.InferenceServerClient(gateway.http)
    grpc = triton_grpc.InferenceServerClient(gateway.grpc)
    one = [text_input(triton_http, ["a"])]
    one_grpc = [text_input(triton_grpc, ["a"])]
    # 400 / INVALID_ARGUMENT: refused by the gateway, and by the worker (its error answer)
    wrong = triton_http.InferInput("texts", [1], "BYTES")
    wrong.set_data_from_numpy(np.array([b"a"], dtype=object))
    assert http_status(lambda: http.infer("minilm", [wrong], headers=bearer()))[0] == "400"
    too_long = [text_input(triton_http, ["x" * 100_001])]
    status, message = http_status(lambda: http.infer("minilm", too_long, headers=bearer()))
    assert (status, message.split(":")[0]) == ("400", "INPUT_TOO_LARGE")
    status, message = http_status(
        lambda: grpc.infer("minilm", [text_input(triton_grpc, ["x" * 100_001])], headers=bearer())
    )
    assert (status, message.split(":")[0]) == ("StatusCode.INVALID_ARGUMENT", "INPUT_TOO_LARGE")
    # 404 / NOT_FOUND: not in the repository; in it but not served by the worker (its answer)
    assert http_status(lambda: http.infer("nope", one, headers=bearer()))[0] == "404"
    status, message = http_status(
        lambda: http.infer("minilm", one, model_version="0.1.0-bf16", headers=bearer())
    )
    assert (status, message.split(":")[0]) == ("404", "UNKNOWN_MODEL")
    status, _ = http_status(lambda: grpc.infer("nope", one_grpc, headers=bearer()))
    assert status == "StatusCode.NOT_FOUND"
    # 504 / DEADLINE_EXCEEDED: the request's own timeout (microseconds) passes first
    assert (
        http_status(lambda: http.infer("minilm", one, timeout=1000, headers=bearer()))[0] == "504"
    )
    status, _ = http_status(lambda: grpc.infer("minilm", one_grpc, timeout=1000, headers=bearer()))
    assert status == "StatusCode.DEADLINE_EXCEEDED"
    # 503 / UNAVAILABLE: a gateway that cannot reach Kafka
    unready = triton_http.InferenceServerClient(unready_gateway.http)
    assert unready.is_server_live()
    assert not unready.is_server_ready()
    assert http_status(lambda: unready.infer("minilm", one))[0] == "503"
    unready_grpc = triton_grpc.InferenceServerClient(unready_gateway.grpc)
    assert not unready_grpc.is_server_ready()
    status, _ = http_status(lambda: unready_grpc.infer("minilm", one_grpc))
    assert status == "StatusCode.UNAVAILABLE"


def test_401_without_a_valid_token_and_403_for_a_model_it_may_not_use(
    gateway: GatewayServer,
) -> None:
    http = triton_http.InferenceServerClient(gateway.http)
    images = triton_http.InferInput("image", [1, 64], "FP32")
    images.set_data_from_numpy(np.zeros((1, 64), np.float32))
    assert http_status(lambda: http.get_model_metadata("minilm"))[0] == "401"
    assert (
        http_status(
            lambda: http.infer("minilm", [text_input(triton_http, ["a"])], headers=bearer("x" * 30))
        )[0]
        == "401"
    )
    status, message = http_status(lambda: http.infer("digits", [images], headers=bearer(TEXT_ONLY)))
    assert (status, message) == ("403", "this token may not use model 'digits'")
    assert http.infer("minilm", [text_input(triton_http, ["a"])], headers=bearer(TEXT_ONLY))
    grpc = triton_grpc.InferenceServerClient(gateway.grpc)
    grpc_images = triton_grpc.InferInput("image", [1, 64], "FP32")
    grpc_images.set_data_from_numpy(np.zeros((1, 64), np.float32))
    status, _ = http_status(lambda: grpc.get_model_metadata("minilm"))
    assert status == "StatusCode.UNAUTHENTICATED"
    status, _ = http_status(lambda: grpc.infer("digits", [grpc_images], headers=bearer(TEXT_ONLY)))
    assert status == "StatusCode.PERMISSION_DENIED"
    assert ALL_MODELS not in gateway.log_tail(100_000)
    assert TEXT_ONLY not in gateway.log_tail(100_000)


def test_a_stopped_gateway_exits_cleanly(broker: Any, topics: dict[str, str]) -> None:
    settings = {"request_topic": topics["request_topic"]}
    server = GatewayServer(
        broker.bootstrap, {**settings, "gateway_reply_topic": "kinfer.replies.gw-stop"}
    )
    server.start()
    assert server.stop() == 0, server.log_tail()
    assert "gateway stopping" in server.log_tail()
    server.log_path.unlink(missing_ok=True)
