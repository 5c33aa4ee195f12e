"""The gateway's protocol-neutral core: metadata, readiness, and infer over Kafka.

REST (`streams.gateway.rest`) and gRPC (`streams.gateway.grpc_service`) parse their requests
into an `InferRequest` and write the `InferResponse` back; everything between is here. An
infer call resolves the model version in the catalog, maps the input tensors to a Kafka
request (`streams.gateway.signatures`), publishes it to the request topic with the gateway's
reply topic as ``reply-to`` and a ``deadline_ms`` equal to its timeout, awaits the answer, and
maps the answer (or its error code) back. There is no second inference path: the same
contract, topics and workers as every Kafka client.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from aiokafka.errors import KafkaError

from streams.client import ReplyTimeout
from streams.errors import KinferError
from streams.gateway.catalog import ModelCatalog, ModelVersion
from streams.gateway.errors import BadInput, GatewayError, NotReady, Timeout, from_answer
from streams.gateway.kafka_link import KafkaLink
from streams.gateway.tensors import InputTensor, OutputTensor, RequestedOutput
from streams.settings import Settings

__all__ = ["EXTENSIONS", "InferRequest", "InferResponse", "InferenceGateway"]

log = logging.getLogger(__name__)

#: The protocol extensions the gateway implements (Triton's names for them).
EXTENSIONS = ("binary_tensor_data", "classification")
#: How often the catalog is read again from the model repository.
CATALOG_REFRESH_S = 10.0
#: Parameters of stateful (sequence) models, which kinfer does not have.
_SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")


@dataclass(frozen=True)
class InferRequest:
    """A parsed infer request, whichever protocol it came in."""

    model: str
    version: str | None
    inputs: Sequence[InputTensor]
    outputs: Sequence[RequestedOutput] = ()
    id: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferResponse:
    """An infer answer: the model version that computed it and the requested outputs."""

    model: str
    version: str
    id: str | None
    outputs: Sequence[OutputTensor]


def server_version() -> str:
    """kinfer's installed version."""
    try:
        return metadata.version("kinfer")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class InferenceGateway:
    """What both front ends serve: health, metadata and infer, over one Kafka link."""

    def __init__(self, settings: Settings, catalog: ModelCatalog, link: KafkaLink) -> None:
        self.settings = settings
        self.catalog = catalog
        self.link = link
        self.stopping = False
        self._refresher: asyncio.Task[None] | None = None

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Connect to Kafka and keep the catalog fresh, in the background."""
        self.link.start()
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh(), name="kinfer-gateway-catalog")

    async def stop(self) -> None:
        """Report not ready, then close the Kafka link."""
        self.stopping = True
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        await self.link.stop()

    async def _refresh(self) -> None:
        root = self.settings.model_repository
        while True:
            await asyncio.sleep(CATALOG_REFRESH_S)
            try:
                self.catalog = await asyncio.to_thread(ModelCatalog.from_repository, root)
            except Exception:  # keep serving the catalog it has
                log.exception("reading the model repository %s failed", root)

    # -- health and metadata --------------------------------------------------------------

    @property
    def live(self) -> bool:
        """The process runs and answers."""
        return True

    @property
    def ready(self) -> bool:
        """Kafka's producer and reply reader are started, and the gateway is not stopping."""
        return self.link.ready and not self.stopping

    def server_metadata(self) -> dict[str, Any]:
        """The protocol's server metadata."""
        return {"name": "kinfer", "version": server_version(), "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The protocol's model metadata; ModelNotFound for an unknown name or version."""
        return self.catalog.metadata(name, version)

    def resolve(self, name: str, version: str | None = None) -> ModelVersion:
        """The model version a call names; ModelNotFound for an unknown name or version."""
        return self.catalog.resolve(name, version)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether the model is in the repository and the gateway is ready (else ModelNotFound)."""
        self.catalog.resolve(name, version)
        return self.ready

    # -- infer ----------------------------------------------------------------------------

    async def infer(
        self, request: InferRequest, *, time_left_s: float | None = None
    ) -> InferResponse:
        """Answer one infer request over Kafka.

        ``time_left_s``: the caller's own deadline (a gRPC deadline), which may shorten the
        gateway's timeout, as the request's ``timeout`` parameter (microseconds) may.

        Raises:
            GatewayError: BadInput, ModelNotFound, Timeout, NotReady, ModelFailed.
        """
        resolved = self.catalog.resolve(request.model, request.version)
        signature = resolved.signature
        signature.check_outputs(request.outputs)
        timeout_s = self._timeout_s(request.parameters, time_left_s)
        inputs = signature.kafka_inputs(request.inputs)
        limit = self.settings.max_inputs_per_request
        if len(inputs) > limit:
            raise BadInput(
                f"{len(inputs)} inputs are over the limit of {limit} per request "
                "(setting KINFER_MAX_INPUTS_PER_REQUEST)"
            )
        if self.stopping:
            raise NotReady("the gateway is stopping")
        client = self.link.client()
        request_id = uuid.uuid4().hex  # never the caller's id: two callers may share one
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                await client.send(
                    inputs,
                    request_id=request_id,
                    model=request.model,
                    deadline_ms=timeout_s * 1000.0,
                    encoding=signature.encoding,
                    version=resolved.version if request.version else None,
                )
                left = max(0.001, timeout_s - (time.monotonic() - started))
                answer = (await client.collect([request_id], left))[request_id]
        except (TimeoutError, ReplyTimeout):
            raise Timeout(f"no answer within {timeout_s:g} s") from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            raise NotReady("the gateway's Kafka client restarted; retry") from None
        except KafkaError as exc:
            raise NotReady(f"the request could not be published: {exc}") from None
        except GatewayError:
            raise
        except KinferError as exc:
            self.link.broken(exc)
            raise NotReady(f"the gateway's Kafka client failed: {exc}") from None
        if "error" in answer:
            raise from_answer(answer["error"])
        outputs = signature.answer_outputs(answer, request.outputs)
        version = str(answer.get("version") or resolved.version)
        return InferResponse(request.model, version, request.id, outputs)

    def _timeout_s(self, parameters: Mapping[str, Any], time_left_s: float | None) -> float:
        for name in _SEQUENCE_PARAMETERS:
            if parameters.get(name):
                raise BadInput(f"parameter {name!r}: kinfer's models are stateless (no sequences)")
        timeout_s = self.settings.gateway_timeout_s
        requested = parameters.get("timeout")
        if requested is not None:
            if isinstance(requested, bool) or not isinstance(requested, int) or requested <= 0:
                raise BadInput("parameter 'timeout' must be a positive integer of microseconds")
            timeout_s = min(timeout_s, requested / 1e6)
        if time_left_s is not None:
            if time_left_s <= 0:
                raise Timeout("the call's deadline has already passed")
            timeout_s = min(timeout_s, time_left_s)
        return timeout_s
