"""An event as a route reads it, and the enriched record it becomes.

The enriched value is the source value with the prediction *spliced in*: the bytes of the event
up to its closing ``}``, then ``,"<output field>":<prediction>}``. Nothing of the original is
re-serialised, so every original field is untouched byte for byte (key order, number
formatting, escapes, big integers), and the output field comes last. An event that already has
the output field is not enriched (that would change an original field): it is dead-lettered.

Headers: the source record's headers, all of them (``traceparent`` and ``tracestate`` so carry
the W3C trace context), then kinfer's own (:data:`ENRICH_HEADERS`), which replace any source
headers of the same names (an event enriched twice names the last model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

from streams.contract import Headers, JsonId, json_type
from streams.enrich.errors import EventNotEnrichable, EventNotJson, Unenrichable
from streams.enrich.route import EnrichRoute
from streams.errors import InputTooLarge, RequestError
from streams.fieldpath import FieldNotFound, FieldPath
from streams.records import (
    DLQ_OFFSET_HEADER,
    DLQ_PARTITION_HEADER,
    DLQ_TOPIC_HEADER,
    Inbound,
    Outbound,
    dead_letter,
)
from streams.wire_encoding import base64_rows_json, float32_rows

__all__ = [
    "ENRICH_HEADERS",
    "ID_HEADER",
    "MODEL_HEADER",
    "VERSION_HEADER",
    "Event",
    "encode_prediction",
    "read_event",
    "route_dead_letter",
    "send_timestamp",
    "sink_headers",
    "splice",
]

MODEL_HEADER: Final = "kinfer-model"
VERSION_HEADER: Final = "kinfer-version"
ID_HEADER: Final = "kinfer-id"
#: Every header kinfer adds to an enriched event (the source ones are the dead letters' too).
ENRICH_HEADERS: Final = (
    MODEL_HEADER,
    VERSION_HEADER,
    DLQ_TOPIC_HEADER,
    DLQ_PARTITION_HEADER,
    DLQ_OFFSET_HEADER,
    ID_HEADER,
)
_WHITESPACE = b" \t\r\n"
#: Bytes a header takes in a record beyond its name and value (varint lengths and count).
_HEADER_OVERHEAD = 16


@dataclass(frozen=True, slots=True)
class Event:
    """A source event that can be enriched: its model input, its id, whether it has fields."""

    value: Any
    id: JsonId
    empty: bool


def read_event(value: bytes | None, route: EnrichRoute, output_field: str, max_bytes: int) -> Event:
    """Decode ``value`` and find the route's fields in it.

    Raises Unenrichable, holding the RequestError that says why the event cannot be enriched
    (its code and message go to the dead letter's headers) and the event's id if it was found.
    """
    doc = _decode(value, max_bytes)
    event_id = _event_id(doc, route.id_path)
    try:
        if output_field in doc:
            raise EventNotEnrichable(
                f"the event already has a field {output_field!r}; enriching it would change "
                "an original field (choose another output field)"
            )
        try:
            found = route.text_path.get(doc)
        except FieldNotFound as exc:
            raise EventNotEnrichable(f"the text path {exc}") from None
    except RequestError as exc:
        raise Unenrichable(exc, event_id) from None
    return Event(found, event_id, empty=not doc)


def _decode(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    try:
        if value is None:
            raise EventNotJson("the record has no value (a tombstone)")
        if len(value) > max_bytes:
            raise InputTooLarge("event size in bytes", len(value), max_bytes, "MAX_MESSAGE_BYTES")
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise EventNotJson(str(exc)) from None
        if not isinstance(doc, dict):
            raise EventNotEnrichable(
                f"the event is {json_type(doc)}; only a JSON object can be enriched"
            )
    except RequestError as exc:
        raise Unenrichable(exc) from None
    return doc


def _event_id(doc: dict[str, Any], path: FieldPath | None) -> JsonId:
    """The event's id at ``path`` (None without a path)."""
    if path is None:
        return None
    try:
        found = path.get(doc)
    except FieldNotFound as exc:
        raise Unenrichable(EventNotEnrichable(f"the id path {exc}")) from None
    if isinstance(found, bool) or not isinstance(found, str | int):
        raise Unenrichable(
            EventNotEnrichable(
                f"the id path {path.text} holds {json_type(found)}: an id is a string or an integer"
            )
        )
    return found


def encode_prediction(output_kind: str, encoding: str, row: np.ndarray) -> bytes:
    """One input's prediction as JSON: an embedding's floats (or its base64 string), a
    classifier's ``{"label", "probabilities"}``."""
    if output_kind == "classification":
        from models.digits.classifier import output_rows

        return orjson.dumps(output_rows(np.asarray(row)[None, :])[0])
    rows = float32_rows(np.asarray(row)[None, :])
    if encoding == "base64":
        return base64_rows_json(rows)[1:-1]  # the one string of the one-row array
    return orjson.dumps(rows[0], option=orjson.OPT_SERIALIZE_NUMPY)


def splice(value: bytes, field: str, prediction: bytes, *, empty: bool) -> bytes:
    """``value`` (a JSON object) with ``"field": prediction`` added as its last member."""
    body = value.rstrip(_WHITESPACE)
    if not body.endswith(b"}"):  # read_event parsed it as an object: it ends with '}'
        raise ValueError("not a JSON object")
    separator = b"" if empty else b","
    return b"".join((body[:-1], separator, orjson.dumps(field), b":", prediction, b"}"))


def own_headers(
    inbound: Inbound, model: str | None, version: str | None, event_id: JsonId
) -> Headers:
    """kinfer's headers for a record made from ``inbound``: the model, where it came from."""
    own: list[tuple[str, bytes]] = []
    if model is not None and version is not None:
        own += [(MODEL_HEADER, model.encode()), (VERSION_HEADER, version.encode())]
    own += [
        (DLQ_TOPIC_HEADER, inbound.topic.encode()),
        (DLQ_PARTITION_HEADER, str(inbound.partition).encode()),
        (DLQ_OFFSET_HEADER, str(inbound.offset).encode()),
    ]
    if event_id is not None:
        own.append((ID_HEADER, str(event_id).encode()))
    return tuple(own)


def sink_headers(inbound: Inbound, model: str, version: str, event_id: JsonId) -> Headers:
    """The source headers (but those kinfer sets), then kinfer's own."""
    kept = tuple((name, value) for name, value in inbound.headers if name not in ENRICH_HEADERS)
    return (*kept, *own_headers(inbound, model, version, event_id))


def route_dead_letter(
    inbound: Inbound, error: RequestError, route: EnrichRoute, event_id: JsonId, max_bytes: int
) -> Outbound:
    """The event, unchanged, on the route's dead-letter topic: `streams.records.dead_letter`'s
    headers (the reason, where it came from), then the route's model and the event's id."""
    extra: Headers = ((MODEL_HEADER, route.model.encode()),)
    if event_id is not None:
        extra = (*extra, (ID_HEADER, str(event_id).encode()))
    room = max_bytes - sum(len(name) + len(value) + _HEADER_OVERHEAD for name, value in extra)
    letter = dead_letter(inbound, error, route.dead_letter_topic, room)
    return Outbound(letter.topic, letter.value, (*letter.headers, *extra), "dead-letter")


def send_timestamp(seconds: float) -> float | None:
    """The source timestamp for the producer (epoch seconds; None when the source had none).

    Faust's producer truncates ``seconds * 1000`` to whole milliseconds: half a millisecond past
    the source's gives back exactly its millisecond, whatever the float rounding.
    """
    if seconds <= 0:
        return None
    return (round(seconds * 1000) + 0.5) / 1000
