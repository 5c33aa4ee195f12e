"""The wire contract: request, response and error records, their headers and (de)coding.

Request (JSON value, any Kafka key)::

    {"id": "r1", "model": "minilm", "version": null, "inputs": ["text", ...], "deadline_ms": 500,
     "encoding": "float"}
    {"id": "r2", "model": "digits", "inputs": [[[0, 3, ...8 numbers], ...8 rows]], "top_k": 3}

``inputs`` is checked against the model's input kind once the request is routed to the model
(`streams.model_io`): strings for text models, 8x8 images for ``digits``. ``version`` pins a
version; without it the model's default answers. Every answer names the version that computed
it.

Answer, on the topic named by the ``reply-to`` header or else the default response topic, with
the request's Kafka key, its ``id`` echoed, and its ``x-request-id`` and other ``x-`` headers and
its W3C Trace Context (``traceparent``, ``tracestate``)::

    {"id": "r1", "model": "minilm", "version": "...", "outputs": [[...384 floats...]],
     "timing": {"queue_ms": .., "tokenize_ms": .., "compute_ms": .., "total_ms": .., ...}}
    {"id": "r2", "model": "digits", "version": "1",
     "outputs": [{"label": 7, "probabilities": [...10 floats...], "top_k": [[7, 0.98], ...]}]}
    {"id": "r1", "error": {"code": "INVALID_REQUEST", "message": "..."}}

``deadline_ms`` is a budget in milliseconds counted from the request record's Kafka timestamp
(its produce time): a request still waiting for the model after it is answered
``DEADLINE_EXCEEDED`` without running the model.

``encoding`` says how the answer's rows are written (:mod:`streams.wire_encoding`): ``"float"``
(the default; absent or null mean it too) as JSON numbers, ``"base64"`` as one string per row,
the base64 of its little-endian float32 bytes. Any other value is ``INVALID_REQUEST``. A base64
answer says so with ``"encoding": "base64"`` after ``version``; a float answer has no
``encoding`` field, byte for byte as before the field existed. Clients send the field only for
base64, so their float requests are accepted by workers that predate it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson

from streams import wire_encoding
from streams.errors import (
    InputTooLarge,
    InvalidJson,
    InvalidRequest,
    RequestError,
)
from streams.wire_encoding import DEFAULT_ENCODING, ENCODINGS, Encoding
from streams.wire_encoding import decode_rows as decode_rows

if TYPE_CHECKING:
    from streams.replyto import ReplyToPolicy

REPLY_TO_HEADER = "reply-to"
REQUEST_ID_HEADER = "x-request-id"
ECHO_HEADER_PREFIX = "x-"
#: W3C Trace Context headers (OpenTelemetry's propagation), echoed as they are
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
CONTENT_TYPE = ("content-type", b"application/json")
MAX_ID_CHARS = 256

#: The fields a request may have.
_REQUEST_FIELDS = frozenset(
    {"id", "model", "version", "inputs", "deadline_ms", "encoding", "top_k"}
)

#: Kafka's legal topic names.
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

Headers = Sequence[tuple[str, bytes]]
JsonId = str | int | None


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits applied while decoding a request."""

    max_message_bytes: int = 1_048_576
    max_inputs: int = 1024
    max_input_chars: int = 100_000


@dataclass(frozen=True, slots=True)
class Route:
    """Where and how an answer is published: the topic, the key, the echoed headers."""

    topic: str
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded, validated inference request."""

    id: JsonId
    model: str
    version: str | None
    #: as sent; checked against the model's input kind once routed (`streams.model_io`)
    inputs: Sequence[Any]
    deadline_ms: float | None = None
    encoding: Encoding = DEFAULT_ENCODING
    #: classifiers: also answer the k most likely labels of each input
    top_k: int | None = None

    def deadline(self, produced_at: float) -> float | None:
        """Absolute wall-clock deadline (epoch seconds), given the record's produce time."""
        if self.deadline_ms is None:
            return None
        return produced_at + self.deadline_ms / 1000.0


def normalise_headers(raw: Iterable[tuple[Any, Any]] | Mapping[Any, Any] | None) -> Headers:
    """Headers as (str, bytes) pairs, whatever shape the client library handed them over in."""
    if raw is None:
        return ()
    items = raw.items() if isinstance(raw, Mapping) else raw
    out: list[tuple[str, bytes]] = []
    for key, value in items:
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        if value is None:
            data = b""
        elif isinstance(value, bytes):
            data = value
        else:
            data = str(value).encode("utf-8", "surrogatepass")
        out.append((name, data))
    return tuple(out)


def route_for(
    headers: Headers,
    key: bytes | None,
    default_topic: str,
    reply_to: ReplyToPolicy | None = None,
) -> Route:
    """The answer's route: ``reply-to`` when it names a topic allowed here, else ``default_topic``.

    A ``reply-to`` that is not a legal topic name, or that ``reply_to`` (the allow-list,
    ``streams.replyto``) refuses, is not followed: the answer goes to the default topic, and
    decoding reports it as an ``INVALID_REQUEST``. So does every ``reply-to`` of a message that
    carries a refused one. Without ``reply_to`` any legal name is followed.

    The route echoes the request's ``x-`` headers and its ``traceparent`` and ``tracestate``
    (W3C Trace Context), so an answer joins its request's trace.
    """
    topic = default_topic
    refused = False
    echoed: list[tuple[str, bytes]] = [CONTENT_TYPE]
    for name, value in headers:
        lowered = name.lower()
        if lowered == REPLY_TO_HEADER:
            candidate = value.decode("utf-8", "replace").strip()
            if _reply_to_refusal(candidate, reply_to) is None:
                topic = candidate
            else:
                refused = True
        elif lowered.startswith(ECHO_HEADER_PREFIX) or lowered in TRACE_HEADERS:
            echoed.append((name, value))
    return Route(topic=default_topic if refused else topic, key=key, headers=tuple(echoed))


def _reply_to_refusal(topic: str, reply_to: ReplyToPolicy | None) -> str | None:
    if not _TOPIC_NAME.match(topic):
        return f"'reply-to' header {topic[:80]!r} is not a legal Kafka topic name"
    return None if reply_to is None else reply_to.refusal(topic)


def _check_reply_to(headers: Headers, reply_to: ReplyToPolicy | None) -> None:
    for name, value in headers:
        if name.lower() == REPLY_TO_HEADER:
            refusal = _reply_to_refusal(value.decode("utf-8", "replace").strip(), reply_to)
            if refusal is not None:
                raise InvalidRequest(refusal)


def peek_id(value: bytes) -> JsonId:
    """The request's ``id`` if the value is a JSON object with a usable one, else None."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict):
        found = doc.get("id")
        if _valid_id(found):
            return cast(JsonId, found)
    return None


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS
    return isinstance(value, int) and -(2**63) <= value < 2**63


def decode_request(
    value: bytes | None,
    headers: Headers,
    limits: Limits,
    reply_to: ReplyToPolicy | None = None,
) -> Request:
    """Decode and validate one request value, or raise the RequestError that answers it.

    ``reply_to`` is the allow-list of ``reply-to`` topics (see `route_for`).
    """
    if value is None:
        raise InvalidJson("the message has no value (a tombstone)")
    if len(value) > limits.max_message_bytes:
        raise InputTooLarge(
            "message size in bytes", len(value), limits.max_message_bytes, "MAX_MESSAGE_BYTES"
        )
    _check_reply_to(headers, reply_to)
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(str(exc)) from None
    if not isinstance(doc, dict):
        raise InvalidRequest(f"request must be a JSON object, got {json_type(doc)}")
    if not doc.keys() <= _REQUEST_FIELDS:
        unknown = doc.keys() - _REQUEST_FIELDS
        raise InvalidRequest(f"unknown fields: {', '.join(sorted(map(repr, unknown))[:5])}")
    request_id = doc.get("id")
    if not _valid_id(request_id):
        raise InvalidRequest(
            f"'id' must be a string of at most {MAX_ID_CHARS} characters or a 64-bit integer"
        )
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string, such as \"minilm\"")
    version = doc.get("version")
    if version is not None and not isinstance(version, str):
        raise InvalidRequest("'version' must be a string or null")
    inputs = _validate_inputs(doc.get("inputs"), limits)
    deadline_ms = doc.get("deadline_ms")
    if deadline_ms is not None:
        if isinstance(deadline_ms, bool) or not isinstance(deadline_ms, int | float):
            raise InvalidRequest("'deadline_ms' must be a number of milliseconds or null")
        if not 0 < deadline_ms <= 86_400_000:
            raise InvalidRequest("'deadline_ms' must be > 0 and at most one day")
    encoding = _check_encoding(doc.get("encoding"))
    top_k = doc.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InvalidRequest(f"'top_k' must be a positive integer or null, got {top_k!r:.40}")
    return Request(
        id=request_id,
        model=model,
        version=version,
        inputs=inputs,
        deadline_ms=None if deadline_ms is None else float(deadline_ms),
        encoding=encoding,
        top_k=top_k,
    )


def _check_encoding(value: Any) -> Encoding:
    if value is None:
        return DEFAULT_ENCODING
    if isinstance(value, str) and value in ENCODINGS:
        return value
    accepted = " or ".join(f'"{name}"' for name in ENCODINGS)
    got = repr(value[:40]) if isinstance(value, str) else json_type(value)
    raise InvalidRequest(f"'encoding' must be {accepted} (null means \"float\"), got {got}")


def _validate_inputs(inputs: Any, limits: Limits) -> list[Any]:
    """A non-empty list of at most ``limits.max_inputs``; the model's kind checks each input."""
    if not isinstance(inputs, list):
        raise InvalidRequest(f"'inputs' must be a list, got {json_type(inputs)}")
    if not inputs:
        raise InvalidRequest("'inputs' must hold at least one input")
    if len(inputs) > limits.max_inputs:
        raise InputTooLarge(
            "number of inputs", len(inputs), limits.max_inputs, "MAX_INPUTS_PER_REQUEST"
        )
    return inputs


def json_type(value: Any) -> str:
    """How a JSON value is named in error messages: "a string", "an array", "null"..."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def encode_result(
    request: Request,
    version: str,
    outputs: Any,
    timing: Mapping[str, float],
) -> bytes:
    """A result record, its rows written in ``request.encoding``.

    ``outputs`` is an (n, dim) array of float32 rows (anything numpy turns into one is accepted
    and converted). A C-contiguous float32 array is used as it is, without a copy: orjson writes
    its numbers directly, and base64 encodes its bytes in one call.
    """
    rows = wire_encoding.float32_rows(outputs)
    if request.encoding == "base64":
        return orjson.dumps(
            {
                "id": request.id,
                "model": request.model,
                "version": version,
                "encoding": "base64",
                "outputs": orjson.Fragment(wire_encoding.base64_rows_json(rows)),
                "timing": timing,
            }
        )
    return orjson.dumps(
        {
            "id": request.id,
            "model": request.model,
            "version": version,
            "outputs": rows,
            "timing": timing,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def encode_error(request_id: JsonId, error: RequestError) -> bytes:
    """An error record with its stable code."""
    return orjson.dumps(
        {"id": request_id, "error": {"code": error.code.value, "message": error.message}}
    )


def decode_answer(value: bytes) -> dict[str, Any]:
    """Parse an answer record (for clients and tests)."""
    doc = orjson.loads(value)
    if not isinstance(doc, dict):
        raise ValueError("an answer is a JSON object")
    return doc


def encode_request(
    inputs: Sequence[Any],
    *,
    request_id: JsonId,
    model: str = "minilm",
    version: str | None = None,
    deadline_ms: float | None = None,
    encoding: Encoding = DEFAULT_ENCODING,
    top_k: int | None = None,
    params: Mapping[str, Any] | None = None,
) -> bytes:
    """A request record, as clients send it (``encoding`` only when it is not the default).

    ``params`` are further request fields, passed through as they are (e.g. ``{"top_k": 3}``);
    they may not replace the fields this function writes itself.
    """
    doc: dict[str, Any] = {"id": request_id, "model": model, "inputs": list(inputs)}
    if params:
        clash = {"id", "model", "inputs", "version", "deadline_ms", "encoding"} & params.keys()
        if clash:
            raise ValueError(f"params may not set {sorted(clash)}: use their own arguments")
        doc.update(params)
    if top_k is not None:
        doc["top_k"] = top_k
    if version is not None:
        doc["version"] = version
    if deadline_ms is not None:
        doc["deadline_ms"] = deadline_ms
    if encoding != DEFAULT_ENCODING:
        doc["encoding"] = _check_encoding(encoding)
    return orjson.dumps(doc)
