"""Error types. A RequestError becomes an error answer with a stable code on the wire."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import ClassVar

from models.errors import RunnerClosedError


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

    def __init__(
        self,
        model: str,
        version: str | None,
        served: Mapping[str, Sequence[str]],
        state: str | None = None,
    ) -> None:
        asked = model if version is None else f"{model} version {version!r}"
        listing = "; ".join(
            f"{name} ({', '.join(versions)})" for name, versions in sorted(served.items())
        )
        why = "is not served here" if state is None else f"is {state}, not serving yet"
        super().__init__(f"model {asked} {why}; served: {listing or 'nothing (yet)'}")


class InputTooLarge(RequestError):
    code = ErrorCode.INPUT_TOO_LARGE

    def __init__(self, what: str, size: int, limit: int, setting: str) -> None:
        super().__init__(f"{what} is {size}, over the limit of {limit} (setting KINFER_{setting})")


class AnswerTooLarge(InputTooLarge):
    """The answer would be larger than a Kafka record may be: the request asked too much."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__("the answer's record size in bytes", size, limit, "MAX_ANSWER_BYTES")
        self.message += (
            '; send fewer inputs per request, or ask for "encoding": "base64" '
            "(less than half the size)"
        )


class ReplyToUnwritable(InvalidRequest):
    """The ``reply-to`` topic refused the answer for good (missing, not authorised)."""

    def __init__(self, topic: str, reason: str, answered_on: str) -> None:
        super().__init__(
            f"the 'reply-to' topic {topic[:80]!r} cannot be written to ({reason}); "
            f"this answer went to {answered_on!r} instead"
        )


class DeadlineExceeded(RequestError):
    code = ErrorCode.DEADLINE_EXCEEDED
    dead_letter = False

    def __init__(self, late_ms: float) -> None:
        super().__init__(f"deadline passed {late_ms:.0f} ms before the model could run it")


class InternalError(RequestError):
    """A failure of ours or of the model.

    Its message never carries the exception itself (a client has no use for our internals, and
    they may leak): the worker logs that under ``reference``, which the message names.
    """

    code = ErrorCode.INTERNAL
    dead_letter = False

    def __init__(self, what: str, reference: str | None = None) -> None:
        self.reference = reference
        if reference is not None:
            what = f"{what} (error reference {reference}; the worker's log has the details)"
        super().__init__(what)


class WorkerUnhealthy(KinferError):
    """The worker can no longer serve (a systemic failure): what it holds stays unanswered.

    Never an answer: the requests it fails are neither answered nor acked, so they stay
    uncommitted and are delivered again once the worker is restarted (its /live fails).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Texts in an exception's message that mean the device or the host ran out of memory.
_OUT_OF_MEMORY = ("resource_exhausted", "out of memory", "out_of_memory")


def is_systemic(exc: BaseException) -> bool:
    """Whether ``exc`` says the model cannot run anything (not just this input).

    True for errors marked ``systemic = True``, MemoryError, a closed model runner, and
    device out-of-memory errors (XLA's RESOURCE_EXHAUSTED, CUDA's "out of memory").
    """
    if getattr(exc, "systemic", False) or isinstance(exc, MemoryError | RunnerClosedError):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _OUT_OF_MEMORY)


def error_reference() -> str:
    """A short random id that ties an error answer to the worker's log line about it."""
    return uuid.uuid4().hex[:12]
