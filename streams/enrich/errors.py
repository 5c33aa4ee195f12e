"""Why an event cannot be enriched: the errors its dead letter names (code and message).

They reuse the wire contract's codes (`streams.errors.ErrorCode`), so a dead letter of an event
reads as one of a request: ``INVALID_JSON`` (not JSON, a tombstone), ``INVALID_REQUEST`` (not an
object, a path that matches nothing, a value the model does not take), ``INPUT_TOO_LARGE``,
``UNKNOWN_MODEL`` (the route's model or version is no longer served), ``INTERNAL``.
"""

from __future__ import annotations

from streams.contract import JsonId
from streams.errors import InputTooLarge, InvalidJson, InvalidRequest, KinferError, RequestError

__all__ = ["EnrichedTooLarge", "EventNotEnrichable", "EventNotJson", "Unenrichable"]


class EventNotJson(InvalidJson):
    """The event's value is not UTF-8 JSON (or there is none)."""

    def __init__(self, reason: str) -> None:
        RequestError.__init__(self, f"the event's value is not valid UTF-8 JSON: {reason}")


class EventNotEnrichable(InvalidRequest):
    """The event is JSON, but not what the route reads: not an object, a field missing..."""


class Unenrichable(KinferError):
    """An event the route cannot enrich: ``error`` says why; ``event_id`` if it was found."""

    def __init__(self, error: RequestError, event_id: JsonId = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.event_id = event_id


class EnrichedTooLarge(InputTooLarge):
    """The enriched record would be larger than a Kafka record may be."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            "the enriched event's record size in bytes", size, limit, "MAX_ANSWER_BYTES"
        )
        self.message += "; a smaller event, or the base64 encoding for embeddings"
        self.args = (self.message,)
