"""The gateway's REST and gRPC front ends without Kafka: statuses, auth, limits, the protocol.

The gateway here is never connected to Kafka (its link is not started), which is exactly the
"not ready" state; every answer that needs no worker is tested against the real servers. Infer
answers themselves are tested against a worker in tests/integration/test_gateway.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.broker import free_port
from streams.errors import ErrorCode
from streams.gateway import errors
from streams.gateway.auth import Access, OpenAccess, TokenFile
from streams.gateway.catalog import ModelCatalog
from streams.gateway.grpc_service import (
    InferenceServicer,
    add_to_server,
    decode_request,
    encode_response,
)
from streams.gateway.kafka_link import KafkaLink
from streams.gateway.proto import generate
from streams.gateway.proto import open_inference_grpc_pb2 as pb
from streams.gateway.proto import open_inference_grpc_pb2_grpc as pb_grpc
from streams.gateway.rest import create_app
from streams.gateway.service import InferenceGateway, InferResponse
from streams.gateway.tensors import OutputTensor
from streams.security import PLAINTEXT
from streams.settings import Settings

TOKEN = "unit-test-token-0123456789"
DIGITS_ONLY = "digits-only-token-0123456789"
TEXT_BODY = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}


@dataclass
class Seen:
    protocol: str
    endpoint: str
    model: str | None
    status: str


class Recorder:
    """A RequestObserver keeping what it is told."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def request_done(
        self, *, protocol: Any, endpoint: Any, model: Any, status: str, seconds: float
    ) -> None:
        assert seconds >= 0
        self.seen.append(Seen(protocol, endpoint, model, status))


def unconnected_gateway(settings: Settings) -> InferenceGateway:
    return InferenceGateway(
        settings, ModelCatalog.from_repository(), KafkaLink(settings, PLAINTEXT)
    )


@pytest.fixture
def token_access(tmp_path: Path) -> TokenFile:
    path = tmp_path / "tokens.json"
    path.write_bytes(
        orjson.dumps(
            {
                "tokens": [
                    {"name": "all", "token": TOKEN, "models": ["*"]},
                    {"name": "digits", "token": DIGITS_ONLY, "models": ["digits"]},
                ]
            }
        )
    )
    return TokenFile(path)


async def http_client(
    access: Access, observer: Recorder, max_body_bytes: int = 8 * 1024 * 1024
) -> TestClient[Any, Any]:
    app = create_app(
        unconnected_gateway(Settings()), access, max_body_bytes=max_body_bytes, observer=observer
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def rest(token_access: TokenFile) -> AsyncIterator[tuple[TestClient[Any, Any], Recorder]]:
    observer = Recorder()
    client = await http_client(token_access, observer)
    try:
        yield client, observer
    finally:
        await client.close()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "grpc_code"),
    [
        (ErrorCode.INVALID_JSON, 400, grpc.StatusCode.INVALID_ARGUMENT),
        (ErrorCode.INVALID_REQUEST, 400, grpc.StatusCode.INVALID_ARGUMENT),
        (ErrorCode.INPUT_TOO_LARGE, 400, grpc.StatusCode.INVALID_ARGUMENT),
        (ErrorCode.UNKNOWN_MODEL, 404, grpc.StatusCode.NOT_FOUND),
        (ErrorCode.DEADLINE_EXCEEDED, 504, grpc.StatusCode.DEADLINE_EXCEEDED),
        (ErrorCode.INTERNAL, 500, grpc.StatusCode.INTERNAL),
        ("SOMETHING_NEW", 500, grpc.StatusCode.INTERNAL),
    ],
)
def test_worker_error_codes_map_to_http_and_grpc_statuses(
    code: str, status: int, grpc_code: grpc.StatusCode
) -> None:
    error = errors.from_answer({"code": code, "message": "why"})
    assert (error.http_status, error.grpc_code) == (status, grpc_code)
    assert error.body() == {"error": f"{code}: why"}


# -- REST ------------------------------------------------------------------------------------


async def test_health_needs_no_token_and_ready_is_503_until_kafka_is_reached(
    rest: tuple[TestClient[Any, Any], Recorder],
) -> None:
    client, observer = rest
    live = await client.get("/v2/health/live")
    assert (live.status, await live.json()) == (200, {"live": True})
    ready = await client.get("/v2/health/ready")
    assert ready.status == 503
    body = await ready.json()
    assert body["ready"] is False
    assert "not connected to Kafka" in body["error"]
    assert [(s.endpoint, s.status) for s in observer.seen] == [
        ("health_live", "200"),
        ("health_ready", "503"),
    ]


async def test_rest_answers_401_without_a_valid_token_and_403_for_another_model(
    rest: tuple[TestClient[Any, Any], Recorder],
) -> None:
    client, observer = rest
    missing = await client.get("/v2")
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "missing bearer token" in (await missing.json())["error"]
    wrong = await client.post("/v2/models/minilm/infer", json=TEXT_BODY, headers=auth("x" * 20))
    assert (wrong.status, await wrong.json()) == (401, {"error": "invalid bearer token"})
    forbidden = await client.get("/v2/models/minilm", headers=auth(DIGITS_ONLY))
    assert forbidden.status == 403
    assert (await forbidden.json())["error"] == "this token may not use model 'minilm'"
    allowed = await client.get("/v2/models/digits", headers=auth(DIGITS_ONLY))
    assert allowed.status == 200
    assert [s.status for s in observer.seen] == ["401", "401", "403", "200"]
    assert all(TOKEN not in str(s) and DIGITS_ONLY not in str(s) for s in observer.seen)


async def test_rest_metadata_and_model_readiness(
    rest: tuple[TestClient[Any, Any], Recorder],
) -> None:
    client, _ = rest
    server = await (await client.get("/v2", headers=auth())).json()
    assert server["name"] == "kinfer"
    assert "binary_tensor_data" in server["extensions"]
    model = await client.get("/v2/models/minilm/versions/bf16", headers=auth())
    assert (await model.json())["versions"] == ["0.1.0-bf16"]
    unknown = await client.get("/v2/models/minilm/versions/7", headers=auth())
    assert unknown.status == 404
    assert "no version '7'" in (await unknown.json())["error"]
    ready = await client.get("/v2/models/minilm/ready", headers=auth())
    assert ready.status == 503
    assert (await client.get("/v2/models/nope/ready", headers=auth())).status == 404


async def test_rest_infer_statuses_without_kafka(
    rest: tuple[TestClient[Any, Any], Recorder],
) -> None:
    client, observer = rest
    unknown = await client.post("/v2/models/nope/infer", data=b"not even json", headers=auth())
    assert unknown.status == 404, "the model is judged before the body"
    bad = await client.post("/v2/models/minilm/infer", data=b"{", headers=auth())
    assert bad.status == 400
    assert "not valid JSON" in (await bad.json())["error"]
    wrong_input = dict(TEXT_BODY, inputs=[dict(TEXT_BODY["inputs"][0], name="texts")])
    bad_input = await client.post("/v2/models/minilm/infer", json=wrong_input, headers=auth())
    assert bad_input.status == 400
    not_ready = await client.post("/v2/models/minilm/infer", json=TEXT_BODY, headers=auth())
    assert not_ready.status == 503
    assert "not connected to Kafka" in (await not_ready.json())["error"]
    assert [(s.endpoint, s.model, s.status) for s in observer.seen] == [
        ("infer", "nope", "404"),
        ("infer", "minilm", "400"),
        ("infer", "minilm", "400"),
        ("infer", "minilm", "503"),
    ]


async def test_a_body_over_the_limit_is_413(token_access: TokenFile) -> None:
    client = await http_client(token_access, Recorder(), max_body_bytes=2048)
    try:
        big = {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x" * 4096]}]
        }
        response = await client.post("/v2/models/minilm/infer", json=big, headers=auth())
        assert response.status == 413
        assert "KINFER_GATEWAY_MAX_BODY_BYTES" in (await response.json())["error"]
    finally:
        await client.close()


async def test_unknown_routes_and_methods_answer_json_errors() -> None:
    client = await http_client(OpenAccess(), Recorder())
    try:
        missing = await client.get("/v2/nothing")
        assert missing.status == 404
        assert "GET /v2/nothing" in (await missing.json())["error"]
        method = await client.get("/v2/models/minilm/infer")
        assert method.status == 405
        assert "error" in await method.json()
        assert (await client.get("/v2")).status == 200, "open access: no token needed"
    finally:
        await client.close()


# -- gRPC ------------------------------------------------------------------------------------


@pytest.fixture
async def grpc_stub(token_access: TokenFile) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    server = grpc.aio.server()
    add_to_server(server, InferenceServicer(unconnected_gateway(Settings()), token_access))
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await channel.close()
        await server.stop(None)


def metadata(token: str = TOKEN) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def grpc_code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_grpc_health_needs_no_token_and_ready_is_false_without_kafka(
    grpc_stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    assert (await grpc_stub.ServerLive(pb.ServerLiveRequest())).live is True
    assert (await grpc_stub.ServerReady(pb.ServerReadyRequest())).ready is False


async def test_grpc_statuses_for_tokens_models_inputs_and_readiness(
    grpc_stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    request = pb.ModelInferRequest(model_name="minilm")
    request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        b"a"
    )
    code, _ = await grpc_code(grpc_stub.ModelInfer(request))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, details = await grpc_code(grpc_stub.ModelInfer(request, metadata=metadata(DIGITS_ONLY)))
    assert (code, details) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "this token may not use model 'minilm'",
    )
    code, _ = await grpc_code(grpc_stub.ModelInfer(request, metadata=metadata()))
    assert code == grpc.StatusCode.UNAVAILABLE
    unknown = pb.ModelInferRequest(model_name="nope")
    code, details = await grpc_code(grpc_stub.ModelInfer(unknown, metadata=metadata()))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "unknown model 'nope'" in details
    bad = pb.ModelInferRequest(model_name="minilm", raw_input_contents=[b"\x09\x00\x00\x00a"])
    bad.inputs.add(name="text", datatype="BYTES", shape=[1])
    code, details = await grpc_code(grpc_stub.ModelInfer(bad, metadata=metadata()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "runs past the data" in details
    answer = await grpc_stub.ModelMetadata(
        pb.ModelMetadataRequest(name="digits"), metadata=metadata()
    )
    assert [t.name for t in answer.outputs] == ["label", "probabilities"]
    assert list(answer.inputs[0].shape) == [-1, 8, 8]
    ready = await grpc_stub.ModelReady(pb.ModelReadyRequest(name="minilm"), metadata=metadata())
    assert ready.ready is False
    code, _ = await grpc_code(
        grpc_stub.ModelReady(pb.ModelReadyRequest(name="minilm", version="9"), metadata=metadata())
    )
    assert code == grpc.StatusCode.NOT_FOUND


# -- the protocol's messages, as tritonclient writes and reads them --------------------------


def test_kinfers_messages_are_tritonclients_field_for_field() -> None:
    from tritonclient.grpc import service_pb2 as triton

    def fields(descriptor: Any) -> dict[str, Any]:
        shape = {f.name: (f.number, f.type, f.label) for f in descriptor.fields}
        nested = {n.name: fields(n) for n in descriptor.nested_types}
        return {"fields": shape, "nested": nested}

    ours = pb.DESCRIPTOR
    assert ours.package == triton.DESCRIPTOR.package == "inference"
    for name, message in ours.message_types_by_name.items():
        assert fields(message) == fields(triton.DESCRIPTOR.message_types_by_name[name]), name
    service = ours.services_by_name["GRPCInferenceService"]
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        assert theirs.methods_by_name[method.name].input_type.name == method.input_type.name


def test_a_tritonclient_request_decodes_and_our_response_reads_back_in_tritonclient() -> None:
    import tritonclient.grpc as triton_grpc
    from tritonclient.grpc import _utils, service_pb2

    text = triton_grpc.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"Kafka", "东京".encode()], dtype=object))
    wanted = triton_grpc.InferRequestedOutput("probabilities", class_count=3)
    theirs = _utils._get_inference_request(
        model_name="digits",
        inputs=[text],
        model_version="1",
        request_id="r7",
        outputs=[wanted],
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=2_000_000,
        parameters=None,
    )
    decoded = decode_request(pb.ModelInferRequest.FromString(theirs.SerializeToString()))
    assert (decoded.model, decoded.version, decoded.id) == ("digits", "1", "r7")
    assert decoded.inputs[0].data == [b"Kafka", "东京".encode()]
    assert decoded.outputs[0].classification == 3
    assert decoded.parameters["timeout"] == 2_000_000

    rows = np.array([[0.25, -1.0, 3.5]], np.float32)
    answer = InferResponse(
        "minilm",
        "0.1.0",
        "r7",
        [
            OutputTensor("embedding", "FP32", (1, 3), rows.reshape(-1)),
            OutputTensor("label", "INT64", (1,), np.array([9])),
            OutputTensor("top", "BYTES", (1, 1), [b"0.9:9"]),
        ],
    )
    wire = encode_response(answer).SerializeToString()
    result = triton_grpc.InferResult(service_pb2.ModelInferResponse.FromString(wire))
    np.testing.assert_array_equal(result.as_numpy("embedding"), rows)
    assert result.as_numpy("label").tolist() == [9]
    assert result.as_numpy("top").tolist() == [[b"0.9:9"]]
    assert result.get_response().id == "r7"


def test_the_generated_grpc_modules_are_what_protoc_makes_from_the_proto() -> None:
    assert generate.stale() == [], "run `make proto`"
