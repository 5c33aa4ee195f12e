"""What the SDK raises: one exception per error code of an answer, and a timeout.

An error answer ``{"id": .., "error": {"code": "UNKNOWN_MODEL", "message": ".."}}`` becomes the
`ErrorAnswer` subclass of its code (`error_from_answer`); a code this SDK does not know yet
becomes `ErrorAnswer` itself. `ReplyTimeout` means no answer came in time. All of them are
``streams.errors.KinferError``.

These are the client's view of an answer; ``streams.errors`` holds the worker's exceptions, which
build their messages from domain arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from streams.errors import ErrorCode, KinferError

__all__ = [
    "DeadlineExceededError",
    "ErrorAnswer",
    "InputTooLargeError",
    "InternalServerError",
    "InvalidJsonError",
    "InvalidRequestError",
    "ReplyTimeout",
    "UnknownModelError",
    "error_from_answer",
]


class ErrorAnswer(KinferError):
    """The worker answered a request with an error.

    Attributes:
        code: the answer's error code (an ``ErrorCode``, or the text of a code unknown here).
        message: the worker's explanation.
        request_id: the request's ``id`` as echoed (None when the worker could not read it).
    """

    #: The code a subclass stands for (None: the base class, any code).
    code_class: ClassVar[ErrorCode | None] = None
    #: Whether sending the same request again may succeed.
    retriable: ClassVar[bool] = False

    def __init__(self, code: ErrorCode | str, message: str, request_id: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


class InvalidJsonError(ErrorAnswer):
    """``INVALID_JSON``: the request's value was not UTF-8 JSON."""

    code_class = ErrorCode.INVALID_JSON


class InvalidRequestError(ErrorAnswer):
    """``INVALID_REQUEST``: JSON of the wrong shape (a field, an input, ``reply-to``)."""

    code_class = ErrorCode.INVALID_REQUEST


class UnknownModelError(ErrorAnswer):
    """``UNKNOWN_MODEL``: the model or version asked for is not served on that topic."""

    code_class = ErrorCode.UNKNOWN_MODEL


class InputTooLargeError(ErrorAnswer):
    """``INPUT_TOO_LARGE``: over a size limit, or the answer would be (send fewer inputs)."""

    code_class = ErrorCode.INPUT_TOO_LARGE


class DeadlineExceededError(ErrorAnswer):
    """``DEADLINE_EXCEEDED``: ``deadline_ms`` passed before the model could run the request."""

    code_class = ErrorCode.DEADLINE_EXCEEDED
    retriable = True


class InternalServerError(ErrorAnswer):
    """``INTERNAL``: the model failed on this request; the message names a log reference."""

    code_class = ErrorCode.INTERNAL


_BY_CODE: Mapping[str, type[ErrorAnswer]] = {
    cls.code_class.value: cls
    for cls in (
        InvalidJsonError,
        InvalidRequestError,
        UnknownModelError,
        InputTooLargeError,
        DeadlineExceededError,
        InternalServerError,
    )
    if cls.code_class is not None
}


def error_from_answer(answer: Mapping[str, Any]) -> ErrorAnswer | None:
    """The exception an answer stands for, or None for a result answer."""
    error = answer.get("error")
    if error is None:
        return None
    if not isinstance(error, Mapping):
        return ErrorAnswer("UNKNOWN", f"malformed error answer: {error!r:.200}", answer.get("id"))
    code = str(error.get("code", "UNKNOWN"))
    message = str(error.get("message", ""))
    cls = _BY_CODE.get(code, ErrorAnswer)
    return cls(ErrorCode(code) if cls is not ErrorAnswer else code, message, answer.get("id"))


class ReplyTimeout(KinferError, TimeoutError):
    """No answer arrived in time (the worker may be down, slow, or not reading that topic)."""

    def __init__(self, missing: int, timeout_s: float, ids: Sequence[str] = ()) -> None:
        super().__init__(f"{missing} answer(s) did not arrive within {timeout_s:.1f}s")
        self.missing = missing
        self.timeout_s = timeout_s
        self.ids = tuple(ids)
