"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` (grpcio, asyncio).

The service and messages are the protocol's own (``proto/open_inference_grpc.proto``), so
tritonclient's and kserve's gRPC clients work unchanged. Inputs may come as typed
``contents`` or as ``raw_input_contents``; outputs always go as ``raw_output_contents`` (what
Triton sends, and the only form tritonclient reads for numbers). Errors end the call with the
status code of `streams.gateway.errors` and the message as its details. ServerLive and
ServerReady need no token; with a token file every other call needs the metadata
``authorization: Bearer <token>``, and a model's calls a token allowed to use that model.
The call's deadline, when it has one, bounds the wait for the answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from streams.gateway.auth import Access
from streams.gateway.errors import BadInput, GatewayError, NotReady
from streams.gateway.observe import NO_OBSERVER, Endpoint, RequestObserver
from streams.gateway.proto import open_inference_grpc_pb2 as pb
from streams.gateway.proto import open_inference_grpc_pb2_grpc as pb_grpc
from streams.gateway.service import InferenceGateway, InferRequest, InferResponse
from streams.gateway.tensors import (
    BYTES,
    InputTensor,
    RequestedOutput,
    check_shape,
    from_raw,
    from_typed,
)

__all__ = ["InferenceServicer", "add_to_server"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]

#: datatype -> the InferTensorContents field that carries it
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}


def _parameters(entries: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, parameter in entries.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(parameter, choice)
    return values


def _set_parameter(target: pb.InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def decode_request(request: pb.ModelInferRequest) -> InferRequest:
    """The protocol-neutral request of a ModelInferRequest."""
    if not request.inputs:
        raise BadInput("the request has no inputs")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    tensors: list[InputTensor] = []
    for index, item in enumerate(request.inputs):
        datatype, shape = check_shape(item.name, item.datatype, list(item.shape))
        if raw:
            if item.HasField("contents"):
                raise BadInput(f"input {item.name!r} has contents and raw_input_contents")
            tensors.append(from_raw(item.name, datatype, shape, raw[index]))
            continue
        field = _CONTENTS_FIELD.get(datatype)
        if field is None:
            raise BadInput(f"input {item.name!r}: {datatype} travels as raw_input_contents only")
        tensors.append(from_typed(item.name, datatype, shape, getattr(item.contents, field)))
    outputs = []
    for output in request.outputs:
        k = _parameters(output.parameters).get("classification")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int)):
            raise BadInput(f"output {output.name!r}: classification must be an integer")
        outputs.append(RequestedOutput(output.name, classification=k))
    return InferRequest(
        model=request.model_name,
        version=request.model_version or None,
        inputs=tensors,
        outputs=outputs,
        id=request.id or None,
        parameters=_parameters(request.parameters),
    )


def encode_response(response: InferResponse) -> pb.ModelInferResponse:
    """The ModelInferResponse of an answer, every output as raw_output_contents."""
    message = pb.ModelInferResponse(
        model_name=response.model, model_version=response.version, id=response.id or ""
    )
    for tensor in response.outputs:
        message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        message.raw_output_contents.append(tensor.raw())
    return message


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The protocol's six calls over `InferenceGateway`."""

    def __init__(
        self, gateway: InferenceGateway, access: Access, observer: RequestObserver = NO_OBSERVER
    ) -> None:
        self.gateway = gateway
        self.access = access
        self.observer = observer

    async def _call(
        self,
        context: Context,
        endpoint: Endpoint,
        model: str | None,
        work: Callable[[], Awaitable[T]],
        *,
        authorise: bool = True,
    ) -> T:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if authorise:
                self.access.check(_authorization(context), model)
            return await work()
        except GatewayError as exc:
            code = exc.grpc_code
            await context.abort(code, exc.message)  # ends the call: raises
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code = grpc.StatusCode.INTERNAL
            log.exception("gateway gRPC %s failed", endpoint)
            await context.abort(code, "internal error of the gateway (its log has the details)")
        finally:
            self.observer.request_done(
                protocol="grpc",
                endpoint=endpoint,
                model=model,
                status=code.name,
                seconds=time.perf_counter() - started,
            )

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        async def work() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=self.gateway.live)

        return await self._call(context, "health_live", None, work, authorise=False)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        async def work() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self.gateway.ready)

        return await self._call(context, "health_ready", None, work, authorise=False)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        async def work() -> pb.ModelReadyResponse:
            ready = self.gateway.model_ready(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=ready)

        return await self._call(context, "model_ready", request.name, work)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        async def work() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(**self.gateway.server_metadata())

        return await self._call(context, "server_metadata", None, work)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        async def work() -> pb.ModelMetadataResponse:
            doc = self.gateway.model_metadata(request.name, request.version or None)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=doc["name"],
                versions=doc["versions"],
                platform=doc["platform"],
                inputs=[tensor(**spec) for spec in doc["inputs"]],
                outputs=[tensor(**spec) for spec in doc["outputs"]],
            )

        return await self._call(context, "model_metadata", request.name, work)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        async def work() -> pb.ModelInferResponse:
            if self.gateway.stopping:
                raise NotReady("the gateway is stopping")
            self.gateway.resolve(request.model_name, request.model_version or None)
            parsed = decode_request(request)
            answer = await self.gateway.infer(parsed, time_left_s=context.time_remaining())
            return encode_response(answer)

        return await self._call(context, "infer", request.model_name, work)


def _authorization(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def add_to_server(server: grpc.aio.Server, servicer: InferenceServicer) -> None:
    """Register the service on ``server``."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
