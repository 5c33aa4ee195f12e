"""The gateway's errors: each carries its HTTP status and gRPC status code.

| error | HTTP | gRPC |
|---|---|---|
| `BadInput` | 400 | INVALID_ARGUMENT |
| `Unauthenticated` | 401 | UNAUTHENTICATED |
| `Forbidden` | 403 | PERMISSION_DENIED |
| `ModelNotFound` | 404 | NOT_FOUND |
| `BodyTooLarge` | 413 | RESOURCE_EXHAUSTED |
| `ModelFailed` | 500 | INTERNAL |
| `NotReady` | 503 | UNAVAILABLE |
| `Timeout` | 504 | DEADLINE_EXCEEDED |

Over HTTP the body is ``{"error": "<message>"}``; over gRPC the message is the status details.
`from_answer` maps a worker's error answer (``streams.errors.ErrorCode``) onto these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import grpc

from streams.errors import ErrorCode, KinferError

__all__ = [
    "BadInput",
    "BodyTooLarge",
    "Forbidden",
    "GatewayError",
    "ModelFailed",
    "ModelNotFound",
    "NotReady",
    "Timeout",
    "Unauthenticated",
    "from_answer",
]


class GatewayError(KinferError):
    """An error answer of the gateway: a message, an HTTP status, a gRPC status code."""

    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        """The HTTP error body."""
        return {"error": self.message}


class BadInput(GatewayError):
    """The request does not fit the protocol or the model."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(GatewayError):
    """No bearer token, or one that is not in the token file."""

    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class Forbidden(GatewayError):
    """A valid token that may not use this model."""

    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(self, model: str) -> None:
        super().__init__(f"this token may not use model {model!r}")


class ModelNotFound(GatewayError):
    """No such model, or no such version of it, in the repository (or served by the workers)."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class BodyTooLarge(GatewayError):
    """The request body is over KINFER_GATEWAY_MAX_BODY_BYTES."""

    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is over the limit of {limit} bytes "
            "(setting KINFER_GATEWAY_MAX_BODY_BYTES)"
        )


class ModelFailed(GatewayError):
    """The worker answered INTERNAL: a failure of the model or of kinfer, not of the request."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL


class NotReady(GatewayError):
    """The gateway cannot reach Kafka yet (or any more), or is stopping."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class Timeout(GatewayError):
    """No answer within the request's timeout, or the worker found its deadline passed."""

    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


#: A worker's error code -> the gateway error that answers it.
_BY_CODE: Mapping[str, type[GatewayError]] = {
    ErrorCode.INVALID_JSON: BadInput,
    ErrorCode.INVALID_REQUEST: BadInput,
    ErrorCode.INPUT_TOO_LARGE: BadInput,
    ErrorCode.UNKNOWN_MODEL: ModelNotFound,
    ErrorCode.DEADLINE_EXCEEDED: Timeout,
    ErrorCode.INTERNAL: ModelFailed,
}


def from_answer(error: Mapping[str, Any]) -> GatewayError:
    """The gateway error for a worker's ``{"code", "message"}`` error answer."""
    code = str(error.get("code", ErrorCode.INTERNAL))
    message = str(error.get("message", "the worker gave no message"))
    return _BY_CODE.get(code, ModelFailed)(f"{code}: {message}")
