"""Error types. A RequestError becomes an error answer with a stable code on the wire."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorCode(StrEnum):
    """Stable error codes of the wire contract."""

    INVALID_JSON = "INVALID_JSON"
    INVALID_REQUEST = "INVALID_REQUEST"
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    INPUT_TOO_LARGE = "INPUT_TOO_LARGE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"


class KinferError(Exception):
    """Root of kinfer's own errors."""


class RequestError(KinferError):
    """A request that gets an error answer instead of a result."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    #: Whether the raw message also goes to the dead-letter topic: it cannot be served as sent.
    dead_letter: ClassVar[bool] = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidJson(RequestError):
    code = ErrorCode.INVALID_JSON

    def __init__(self, reason: str) -> None:
        super().__init__(f"request value is not valid UTF-8 JSON: {reason}")


class InvalidRequest(RequestError):
    code = ErrorCode.INVALID_REQUEST


class UnknownModel(RequestError):
    code = ErrorCode.UNKNOWN_MODEL

    def __init__(self, model: str, version: str | None, served: str, served_version: str) -> None:
        asked = model if version is None else f"{model} version {version!r}"
        super().__init__(
            f"model {asked} is not served here; this worker serves {served!r} "
            f"version {served_version!r}"
        )


class InputTooLarge(RequestError):
    code = ErrorCode.INPUT_TOO_LARGE

    def __init__(self, what: str, size: int, limit: int, setting: str) -> None:
        super().__init__(f"{what} is {size}, over the limit of {limit} (setting KINFER_{setting})")


class DeadlineExceeded(RequestError):
    code = ErrorCode.DEADLINE_EXCEEDED
    dead_letter = False

    def __init__(self, late_ms: float) -> None:
        super().__init__(f"deadline passed {late_ms:.0f} ms before the model could run it")


class InternalError(RequestError):
    code = ErrorCode.INTERNAL
    dead_letter = False


class ConfigurationError(KinferError):
    """Settings that cannot work together."""
